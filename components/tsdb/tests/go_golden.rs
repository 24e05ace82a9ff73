//! Chunk bytes produced by Prometheus v0.314.0's own `chunkenc` appenders (generated once with
//! a small Go program), decoded by this crate and, where we encode too, compared byte for byte.

use strata_tsdb::chunkenc::{
    CUSTOM_BUCKETS_SCHEMA, CounterResetHint, FloatHistogram, FloatHistogramIterator, Histogram,
    HistogramIterator, Span, XorAppender, XorIterator, encode_float_histogram_chunk,
    encode_histogram_chunk,
};

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

const XOR: &str = "0009003ff00000000000009875c25fff4ffe0007fc000000003782d87effe0000000000007c00000000003894670ffffe0000000000007fffffffffffc690e27fe400000000000300033e3de43c8800759cffffffffffff0bdb9c1f40e3f21e44003ace0";
const HIST: &str =
    "000500ff3f50624dd2f1a9fc8ca568ce318b144029000000000000946ef1f4ce3ac1c48c8d24fbc2442f09106400";
const FHIST: &str = "0004c000ee5c664f8cbe3e9f4e29002000000000000000000000000000000000000000000000ffc0000000000000ffc0000000000000ffc0000000000003c3e9ac2d88bffec25fff3683612fffb6033605b589ad6160";

fn xor_samples() -> Vec<(i64, f64)> {
    let ts = [
        0i64, 15000, 30000, 45001, 59000, 1_000_000, 1_000_000, 1_000_001, -5,
    ];
    let vs = [
        1.0,
        2.0,
        f64::INFINITY,
        f64::from_bits(0x7ff0_0000_0000_0002),
        0.0, // the Go program wrote `-0.0`, which Go constant-folds to +0
        f64::from_bits(0x7ff8_0000_0000_0001), // Go's math.NaN()
        3.25,
        1e300,
        f64::NEG_INFINITY,
    ];
    ts.into_iter().zip(vs).collect()
}

#[test]
fn xor_matches_prometheus_bytes() {
    let want = unhex(XOR);
    let mut a = XorAppender::new();
    for (t, v) in xor_samples() {
        a.append(t, v).unwrap();
    }
    assert_eq!(a.bytes(), &want[..]);
    let got: Vec<(i64, f64)> = XorIterator::new(&want).map(Result::unwrap).collect();
    for (g, w) in got.iter().zip(xor_samples()) {
        assert_eq!(g.0, w.0);
        assert_eq!(g.1.to_bits(), w.1.to_bits());
    }
}

fn go_histograms() -> Vec<(i64, Histogram)> {
    (0..5i64)
        .map(|i| {
            (
                1000 * i + i * i,
                Histogram {
                    counter_reset_hint: CounterResetHint::Unknown,
                    schema: 1,
                    zero_threshold: 0.001,
                    zero_count: i as u64,
                    count: (10 + 3 * i) as u64,
                    sum: 12.5 * (i + 1) as f64,
                    positive_spans: vec![
                        Span {
                            offset: -2,
                            length: 2,
                        },
                        Span {
                            offset: 3,
                            length: 1,
                        },
                    ],
                    negative_spans: vec![Span {
                        offset: 1,
                        length: 1,
                    }],
                    positive_buckets: vec![2 + i, 1, -1],
                    negative_buckets: vec![i],
                    custom_values: vec![],
                },
            )
        })
        .collect()
}

#[test]
fn histogram_matches_prometheus_bytes() {
    let want = unhex(HIST);
    let got: Vec<_> = HistogramIterator::new(&want).map(Result::unwrap).collect();
    let exp = go_histograms();
    assert_eq!(got.len(), exp.len());
    for (i, ((gt, gh), (et, eh))) in got.iter().zip(&exp).enumerate() {
        assert_eq!(gt, et);
        let mut eh = eh.clone();
        if i > 0 {
            eh.counter_reset_hint = CounterResetHint::NotCounterReset;
        }
        assert_eq!(gh, &eh, "sample {i}");
    }
    let mine = encode_histogram_chunk(&exp, CounterResetHint::Unknown).unwrap();
    assert_eq!(mine, want);
}

#[test]
fn float_histogram_matches_prometheus_bytes() {
    let want = unhex(FHIST);
    let exp: Vec<(i64, FloatHistogram)> = (0..4)
        .map(|i| {
            (
                500 * i,
                FloatHistogram {
                    counter_reset_hint: CounterResetHint::Gauge,
                    schema: CUSTOM_BUCKETS_SCHEMA,
                    zero_threshold: 0.0,
                    zero_count: 0.0,
                    count: (3 + i) as f64,
                    sum: 1.5 * i as f64,
                    positive_spans: vec![Span {
                        offset: 0,
                        length: 3,
                    }],
                    negative_spans: vec![],
                    positive_buckets: vec![1.0, (1 + i) as f64, 1.0],
                    negative_buckets: vec![],
                    custom_values: vec![0.1, 1.0, 2.5],
                },
            )
        })
        .collect();
    let got: Vec<_> = FloatHistogramIterator::new(&want)
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, exp);
    let mine = encode_float_histogram_chunk(&exp, CounterResetHint::Gauge).unwrap();
    assert_eq!(mine, want);
}
