//! Merging k series streams, each sorted by labels, into one sorted stream. Series with equal label
//! sets (from several streams, or split over consecutive frames of one stream) become one series with
//! their chunks concatenated in time order. Memory: one head series per input.

use std::cmp::Ordering;
use std::pin::Pin;

use futures::{Stream, StreamExt, future};
use tonic::Status;

use crate::extlabels::compare_labels;
use crate::pb::thanos::Series;

type BoxSeriesStream<'a> = Pin<Box<dyn Stream<Item = Result<Series, Status>> + Send + 'a>>;

struct Input<'a> {
    stream: BoxSeriesStream<'a>,
    head: Option<Series>,
    done: bool,
}

struct Merge<'a> {
    inputs: Vec<Input<'a>>,
    failed: bool,
    /// Labels of the last series sent, to catch unsorted inputs.
    last: Option<Vec<crate::pb::thanos::Label>>,
}

impl Merge<'_> {
    /// Pulls the next series of every input that has no head, concurrently.
    async fn fill(&mut self) -> Result<(), Status> {
        let pulls = self
            .inputs
            .iter_mut()
            .filter(|i| i.head.is_none() && !i.done)
            .map(|i| async move {
                match i.stream.next().await {
                    Some(Ok(s)) => {
                        i.head = Some(s);
                        None
                    }
                    Some(Err(e)) => {
                        i.done = true;
                        Some(e)
                    }
                    None => {
                        i.done = true;
                        None
                    }
                }
            });
        match future::join_all(pulls).await.into_iter().flatten().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn next_series(&mut self) -> Result<Option<Series>, Status> {
        self.fill().await?;
        let mut min: Option<usize> = None;
        for (idx, i) in self.inputs.iter().enumerate() {
            let Some(h) = &i.head else { continue };
            let better = match min.and_then(|m| self.inputs[m].head.as_ref()) {
                None => true,
                Some(cur) => compare_labels(&h.labels, &cur.labels) == Ordering::Less,
            };
            if better {
                min = Some(idx);
            }
        }
        let Some(min) = min else { return Ok(None) };
        let Some(mut out) = self.inputs[min].head.take() else {
            return Ok(None);
        };
        if self
            .last
            .as_ref()
            .is_some_and(|l| compare_labels(&out.labels, l) != Ordering::Greater)
        {
            return Err(Status::internal(format!(
                "series stream {min} is not sorted by labels"
            )));
        }
        loop {
            for i in &mut self.inputs {
                if i.head
                    .as_ref()
                    .is_some_and(|h| compare_labels(&h.labels, &out.labels) == Ordering::Equal)
                    && let Some(h) = i.head.take()
                {
                    out.chunks.extend(h.chunks);
                }
            }
            // The inputs we took from may continue the same series in their next frame.
            self.fill().await?;
            let again = self.inputs.iter().any(|i| {
                i.head
                    .as_ref()
                    .is_some_and(|h| compare_labels(&h.labels, &out.labels) == Ordering::Equal)
            });
            if !again {
                break;
            }
        }
        out.chunks.sort_by_key(|c| (c.min_time, c.max_time));
        self.last = Some(out.labels.clone());
        Ok(Some(out))
    }
}

/// Merges series streams sorted by labels into one sorted stream. The first error of any input is
/// passed on and ends the merged stream.
pub fn merge_sorted<'a, S>(
    streams: Vec<S>,
) -> impl Stream<Item = Result<Series, Status>> + Send + 'a
where
    S: Stream<Item = Result<Series, Status>> + Send + 'a,
{
    let state = Merge {
        inputs: streams
            .into_iter()
            .map(|s| Input {
                stream: Box::pin(s),
                head: None,
                done: false,
            })
            .collect(),
        failed: false,
        last: None,
    };
    futures::stream::unfold(state, |mut st| async move {
        if st.failed {
            return None;
        }
        match st.next_series().await {
            Ok(Some(s)) => Some((Ok(s), st)),
            Ok(None) => None,
            Err(e) => {
                st.failed = true;
                Some((Err(e), st))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::thanos::{AggrChunk, Label};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn series(name: &str, chunk_times: &[i64]) -> Series {
        Series {
            labels: vec![Label {
                name: "__name__".into(),
                value: name.into(),
            }],
            chunks: chunk_times
                .iter()
                .map(|&t| AggrChunk {
                    min_time: t,
                    max_time: t,
                    ..Default::default()
                })
                .collect(),
        }
    }

    fn run(inputs: Vec<Vec<Result<Series, Status>>>) -> Vec<Result<Series, Status>> {
        let streams = inputs.into_iter().map(futures::stream::iter).collect();
        futures::executor::block_on(merge_sorted(streams).collect())
    }

    #[test]
    fn merges_and_concatenates() {
        let out = run(vec![
            vec![Ok(series("a", &[1])), Ok(series("c", &[5]))],
            vec![
                Ok(series("a", &[0])),
                Ok(series("b", &[2])),
                Ok(series("c", &[3])),
            ],
            vec![],
        ]);
        let out: Vec<Series> = out.into_iter().map(|r| r.expect("no error")).collect();
        assert_eq!(
            out,
            vec![
                series("a", &[0, 1]),
                series("b", &[2]),
                series("c", &[3, 5])
            ]
        );
    }

    #[test]
    fn error_ends_stream() {
        let out = run(vec![
            vec![
                Ok(series("a", &[1])),
                Err(Status::unavailable("gone")),
                Ok(series("z", &[1])),
            ],
            vec![Ok(series("b", &[1]))],
        ]);
        // The merge reads ahead (to join split series), so the error may come before "a"; it is
        // always last and nothing after it ("z") is sent.
        let (last, rest) = out.split_last().expect("not empty");
        assert_eq!(
            last.as_ref().map_err(|e| e.code()).err(),
            Some(tonic::Code::Unavailable)
        );
        assert!(
            rest.iter()
                .all(|r| r.as_ref().is_ok_and(|s| s.labels[0].value != "z"))
        );
    }

    #[test]
    fn unsorted_input_is_an_error() {
        let out = run(vec![vec![Ok(series("b", &[1])), Ok(series("a", &[2]))]]);
        let e = out.last().and_then(|r| r.as_ref().err()).expect("error");
        assert_eq!(e.code(), tonic::Code::Internal);
        assert_eq!(e.message(), "series stream 0 is not sorted by labels");
    }

    proptest! {
        #[test]
        fn merge_matches_naive_model(
            inputs in prop::collection::vec(
                prop::collection::vec((0u8..12, 0i64..1000), 0..20), 0..6)
        ) {
            // Each input: sorted by name; a name may repeat (split frames).
            let mut streams = Vec::new();
            let mut model: BTreeMap<String, Vec<i64>> = BTreeMap::new();
            for inp in &inputs {
                let mut v = inp.clone();
                v.sort_by_key(|(n, _)| format!("s{n:02}"));
                let mut s = Vec::new();
                for (n, t) in v {
                    let name = format!("s{n:02}");
                    model.entry(name.clone()).or_default().push(t);
                    s.push(Ok(series(&name, &[t])));
                }
                streams.push(s);
            }
            let got: Vec<Series> = run(streams).into_iter().map(|r| r.expect("no error")).collect();
            let want: Vec<Series> = model
                .into_iter()
                .map(|(n, mut ts)| { ts.sort(); series(&n, &ts) })
                .collect();
            prop_assert_eq!(got, want);
        }
    }
}
