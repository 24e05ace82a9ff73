//! Set operations on sorted, de-duplicated postings lists.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::SeriesRef;

/// Index of the first element ≥ `x` in `s[from..]`, by galloping then binary search.
fn gallop(s: &[SeriesRef], from: usize, x: SeriesRef) -> usize {
    let mut step = 1;
    let mut lo = from;
    let mut hi = from;
    while hi < s.len() && s[hi] < x {
        lo = hi + 1;
        hi += step;
        step *= 2;
    }
    let hi = hi.min(s.len());
    lo + s[lo..hi].partition_point(|&v| v < x)
}

/// `a ∩ b`.
pub fn intersect(a: &[SeriesRef], b: &[SeriesRef]) -> Vec<SeriesRef> {
    let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    let mut out = Vec::with_capacity(small.len());
    if small.is_empty() {
        return out;
    }
    if large.len() / small.len() >= 16 {
        let mut j = 0;
        for &x in small {
            j = gallop(large, j, x);
            if j == large.len() {
                break;
            }
            if large[j] == x {
                out.push(x);
            }
        }
        return out;
    }
    let (mut i, mut j) = (0, 0);
    while i < small.len() && j < large.len() {
        let (x, y) = (small[i], large[j]);
        if x == y {
            out.push(x);
            i += 1;
            j += 1;
        } else if x < y {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// Intersection of all lists (smallest first); empty input gives an empty list.
pub fn intersect_all(mut lists: Vec<Vec<SeriesRef>>) -> Vec<SeriesRef> {
    lists.sort_by_key(Vec::len);
    let mut it = lists.into_iter();
    let Some(mut acc) = it.next() else {
        return Vec::new();
    };
    for l in it {
        if acc.is_empty() {
            break;
        }
        acc = intersect(&acc, &l);
    }
    acc
}

/// `a \ b`.
pub fn subtract(a: &[SeriesRef], b: &[SeriesRef]) -> Vec<SeriesRef> {
    let mut out = Vec::with_capacity(a.len());
    let mut j = 0;
    for &x in a {
        j = gallop(b, j, x);
        if j == b.len() || b[j] != x {
            out.push(x);
        }
    }
    out
}

/// Union of all lists (k-way merge).
pub fn union_all<L: AsRef<[SeriesRef]>>(lists: &[L]) -> Vec<SeriesRef> {
    let non_empty: Vec<&[SeriesRef]> = lists
        .iter()
        .map(AsRef::as_ref)
        .filter(|l| !l.is_empty())
        .collect();
    match non_empty.len() {
        0 => return Vec::new(),
        1 => return non_empty[0].to_vec(),
        2 => {
            let (a, b) = (non_empty[0], non_empty[1]);
            let mut out = Vec::with_capacity(a.len() + b.len());
            let (mut i, mut j) = (0, 0);
            while i < a.len() && j < b.len() {
                if a[i] < b[j] {
                    out.push(a[i]);
                    i += 1;
                } else if b[j] < a[i] {
                    out.push(b[j]);
                    j += 1;
                } else {
                    out.push(a[i]);
                    i += 1;
                    j += 1;
                }
            }
            out.extend_from_slice(&a[i..]);
            out.extend_from_slice(&b[j..]);
            return out;
        }
        _ => {}
    }
    let total: usize = non_empty.iter().map(|l| l.len()).sum();
    let mut out = Vec::with_capacity(total);
    let mut heap: BinaryHeap<Reverse<(SeriesRef, usize, usize)>> = non_empty
        .iter()
        .enumerate()
        .map(|(k, l)| Reverse((l[0], k, 0)))
        .collect();
    while let Some(Reverse((v, k, i))) = heap.pop() {
        if out.last() != Some(&v) {
            out.push(v);
        }
        if let Some(&next) = non_empty[k].get(i + 1) {
            heap.push(Reverse((next, k, i + 1)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn sorted(v: Vec<u64>) -> Vec<u64> {
        v.into_iter().collect::<BTreeSet<_>>().into_iter().collect()
    }

    proptest! {
        #[test]
        fn ops_match_btreeset(
            a in proptest::collection::vec(0u64..500, 0..200),
            b in proptest::collection::vec(0u64..500, 0..200),
            c in proptest::collection::vec(0u64..5000, 0..20),
            d in proptest::collection::vec(0u64..5000, 0..3000),
        ) {
            let (a, b, c, d) = (sorted(a), sorted(b), sorted(c), sorted(d));
            let sa: BTreeSet<u64> = a.iter().copied().collect();
            let sb: BTreeSet<u64> = b.iter().copied().collect();
            let sc: BTreeSet<u64> = c.iter().copied().collect();
            let sd: BTreeSet<u64> = d.iter().copied().collect();
            prop_assert_eq!(intersect(&a, &b), sa.intersection(&sb).copied().collect::<Vec<_>>());
            // Very different sizes take the galloping path.
            prop_assert_eq!(intersect(&c, &d), sc.intersection(&sd).copied().collect::<Vec<_>>());
            prop_assert_eq!(subtract(&a, &b), sa.difference(&sb).copied().collect::<Vec<_>>());
            prop_assert_eq!(subtract(&d, &c), sd.difference(&sc).copied().collect::<Vec<_>>());
            let all: BTreeSet<u64> = sa.iter().chain(&sb).chain(&sc).chain(&sd).copied().collect();
            prop_assert_eq!(union_all(&[a.clone(), b.clone(), c.clone(), d.clone()]), all.into_iter().collect::<Vec<_>>());
            prop_assert_eq!(union_all(&[a.clone(), b.clone()]), sa.union(&sb).copied().collect::<Vec<_>>());
            let i3: BTreeSet<u64> = sa.intersection(&sb).copied().collect::<BTreeSet<_>>().intersection(&sd).copied().collect();
            prop_assert_eq!(intersect_all(vec![a, b, d]), i3.into_iter().collect::<Vec<_>>());
        }
    }
}
