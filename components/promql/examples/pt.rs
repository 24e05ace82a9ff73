fn main() {
    let p = std::env::args().nth(1).unwrap();
    let src = std::fs::read_to_string(&p).unwrap();
    print!("{}", strata_promql::promqltest::run_script(&src).render(&p));
}
