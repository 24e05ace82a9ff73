//! Checks StoreAPI requests and turns them into a checked form: valid time range, compiled
//! (fully anchored) regex matchers, bounded limits.

use regex::Regex;
use tonic::Status;

use crate::pb::thanos::{
    LabelMatcher, LabelNamesRequest, LabelValuesRequest, SeriesRequest, label_matcher,
};

/// Largest regex program we compile from a request (bytes of compiled size).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A checked label matcher.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// The label name (never empty).
    pub name: String,
    /// The operator and value.
    pub op: MatchOp,
}

/// The operator of a [`Matcher`] with its value; regexes are compiled fully anchored.
#[derive(Debug, Clone)]
pub enum MatchOp {
    /// `=`
    Eq(String),
    /// `!=`
    Neq(String),
    /// `=~`: the source as given and the compiled `^(?s:re)$` (as Prometheus 3: `.` matches a newline too).
    Re(String, Regex),
    /// `!~`: the source as given and the compiled `^(?s:re)$` (as Prometheus 3: `.` matches a newline too).
    Nre(String, Regex),
}

impl Matcher {
    /// Checks one wire matcher: known type, non-empty name, compilable regex.
    pub fn from_pb(m: &LabelMatcher) -> Result<Self, Status> {
        if m.name.is_empty() {
            return Err(Status::invalid_argument("matcher with empty label name"));
        }
        let ty = label_matcher::Type::try_from(m.r#type).map_err(|_| {
            Status::invalid_argument(format!(
                "unknown matcher type {} for label {:?}",
                m.r#type, m.name
            ))
        })?;
        let op = match ty {
            label_matcher::Type::Eq => MatchOp::Eq(m.value.clone()),
            label_matcher::Type::Neq => MatchOp::Neq(m.value.clone()),
            label_matcher::Type::Re => MatchOp::Re(m.value.clone(), compile(&m.name, &m.value)?),
            label_matcher::Type::Nre => MatchOp::Nre(m.value.clone(), compile(&m.name, &m.value)?),
        };
        Ok(Self {
            name: m.name.clone(),
            op,
        })
    }

    /// Whether a label value matches (a missing label has the value `""`).
    pub fn matches(&self, value: &str) -> bool {
        match &self.op {
            MatchOp::Eq(v) => v == value,
            MatchOp::Neq(v) => v != value,
            MatchOp::Re(_, re) => re.is_match(value),
            MatchOp::Nre(_, re) => !re.is_match(value),
        }
    }

    /// Back to the wire form (the regex source as given, unanchored like on the wire).
    pub fn to_pb(&self) -> LabelMatcher {
        let (ty, value) = match &self.op {
            MatchOp::Eq(v) => (label_matcher::Type::Eq, v),
            MatchOp::Neq(v) => (label_matcher::Type::Neq, v),
            MatchOp::Re(v, _) => (label_matcher::Type::Re, v),
            MatchOp::Nre(v, _) => (label_matcher::Type::Nre, v),
        };
        LabelMatcher {
            r#type: ty as i32,
            name: self.name.clone(),
            value: value.clone(),
        }
    }
}

fn compile(name: &str, re: &str) -> Result<Regex, Status> {
    regex::RegexBuilder::new(&format!("^(?s:{re})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| Status::invalid_argument(format!("bad regex {re:?} for label {name:?}: {e}")))
}

/// Checks every matcher of a request.
pub fn matchers(ms: &[LabelMatcher]) -> Result<Vec<Matcher>, Status> {
    ms.iter().map(Matcher::from_pb).collect()
}

fn time_range(min: i64, max: i64) -> Result<(), Status> {
    if min > max {
        return Err(Status::invalid_argument(format!(
            "inverted time range: min time {min} is after max time {max}"
        )));
    }
    Ok(())
}

/// `limit` on the wire: 0 or negative means no limit.
fn limit(l: i64) -> Option<usize> {
    (l > 0).then(|| usize::try_from(l).unwrap_or(usize::MAX))
}

/// A checked `SeriesRequest`.
#[derive(Debug, Clone)]
pub struct ValidSeriesRequest {
    /// Start of the range, milliseconds, inclusive.
    pub min_time: i64,
    /// End of the range, milliseconds, inclusive.
    pub max_time: i64,
    /// The checked matchers.
    pub matchers: Vec<Matcher>,
    /// Send labels only.
    pub skip_chunks: bool,
    /// At most this many series.
    pub limit: Option<usize>,
    /// Series per `SeriesBatch` frame; 0 sends single `Series` frames.
    pub batch_size: usize,
    /// Replica labels to strip from every series.
    pub without_replica_labels: Vec<String>,
    /// The request as received, for the fields not checked here (hints, aggregates, shards).
    pub raw: SeriesRequest,
}

impl ValidSeriesRequest {
    /// The options for [`crate::respond::series_responses`] this request asks for.
    pub fn response_options(&self) -> crate::respond::ResponseOptions {
        crate::respond::ResponseOptions {
            batch_size: self.batch_size,
            limit: self.limit,
            skip_chunks: self.skip_chunks,
        }
    }
}

/// Checks a `SeriesRequest`.
pub fn series(req: &SeriesRequest) -> Result<ValidSeriesRequest, Status> {
    time_range(req.min_time, req.max_time)?;
    if req.response_batch_size < 0 {
        return Err(Status::invalid_argument(format!(
            "negative response_batch_size {}",
            req.response_batch_size
        )));
    }
    Ok(ValidSeriesRequest {
        min_time: req.min_time,
        max_time: req.max_time,
        matchers: matchers(&req.matchers)?,
        skip_chunks: req.skip_chunks,
        limit: limit(req.limit),
        batch_size: usize::try_from(req.response_batch_size).unwrap_or(usize::MAX),
        without_replica_labels: req.without_replica_labels.clone(),
        raw: req.clone(),
    })
}

/// A checked `LabelNamesRequest`.
#[derive(Debug, Clone)]
pub struct ValidLabelNamesRequest {
    /// Start of the range, milliseconds.
    pub start: i64,
    /// End of the range, milliseconds.
    pub end: i64,
    /// The checked matchers.
    pub matchers: Vec<Matcher>,
    /// At most this many names.
    pub limit: Option<usize>,
    /// Replica labels to leave out.
    pub without_replica_labels: Vec<String>,
}

/// Checks a `LabelNamesRequest`.
pub fn label_names(req: &LabelNamesRequest) -> Result<ValidLabelNamesRequest, Status> {
    time_range(req.start, req.end)?;
    Ok(ValidLabelNamesRequest {
        start: req.start,
        end: req.end,
        matchers: matchers(&req.matchers)?,
        limit: limit(req.limit),
        without_replica_labels: req.without_replica_labels.clone(),
    })
}

/// A checked `LabelValuesRequest`.
#[derive(Debug, Clone)]
pub struct ValidLabelValuesRequest {
    /// The label whose values are asked for (never empty).
    pub label: String,
    /// Start of the range, milliseconds.
    pub start: i64,
    /// End of the range, milliseconds.
    pub end: i64,
    /// The checked matchers.
    pub matchers: Vec<Matcher>,
    /// At most this many values.
    pub limit: Option<usize>,
    /// Replica labels to leave out.
    pub without_replica_labels: Vec<String>,
}

/// Checks a `LabelValuesRequest`.
pub fn label_values(req: &LabelValuesRequest) -> Result<ValidLabelValuesRequest, Status> {
    if req.label.is_empty() {
        return Err(Status::invalid_argument(
            "label values request with empty label name",
        ));
    }
    time_range(req.start, req.end)?;
    Ok(ValidLabelValuesRequest {
        label: req.label.clone(),
        start: req.start,
        end: req.end,
        matchers: matchers(&req.matchers)?,
        limit: limit(req.limit),
        without_replica_labels: req.without_replica_labels.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn m(ty: i32, name: &str, value: &str) -> LabelMatcher {
        LabelMatcher {
            r#type: ty,
            name: name.into(),
            value: value.into(),
        }
    }

    fn req(ms: Vec<LabelMatcher>) -> SeriesRequest {
        SeriesRequest {
            min_time: 0,
            max_time: 10,
            matchers: ms,
            ..Default::default()
        }
    }

    fn err(r: Result<ValidSeriesRequest, Status>) -> Status {
        match r {
            Ok(v) => panic!("expected an error, got {v:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn inverted_range_is_invalid() {
        let mut r = req(vec![]);
        r.min_time = 11;
        let e = err(series(&r));
        assert_eq!(e.code(), Code::InvalidArgument);
        assert_eq!(
            e.message(),
            "inverted time range: min time 11 is after max time 10"
        );
        let ln = LabelNamesRequest {
            start: 5,
            end: 4,
            ..Default::default()
        };
        assert_eq!(
            label_names(&ln).map(|_| ()).unwrap_err().code(),
            Code::InvalidArgument
        );
    }

    #[test]
    fn bad_regex_names_label_and_regex() {
        let e = err(series(&req(vec![m(2, "job", "a(b")])));
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(
            e.message()
                .starts_with("bad regex \"a(b\" for label \"job\""),
            "{}",
            e.message()
        );
    }

    #[test]
    fn unknown_type_and_empty_name() {
        let e = err(series(&req(vec![m(7, "job", "x")])));
        assert_eq!(e.message(), "unknown matcher type 7 for label \"job\"");
        let e = err(series(&req(vec![m(0, "", "x")])));
        assert_eq!(e.message(), "matcher with empty label name");
        let lv = LabelValuesRequest::default();
        assert_eq!(
            label_values(&lv).map(|_| ()).unwrap_err().code(),
            Code::InvalidArgument
        );
    }

    #[test]
    fn regex_dot_matches_newline_as_in_prometheus() {
        let v = series(&req(vec![m(2, "msg", "a.b")])).expect("valid");
        assert!(v.matchers[0].matches("a\nb"));
        assert!(!v.matchers[0].matches("a\nbc"));
    }

    #[test]
    fn regex_is_fully_anchored() {
        let v = series(&req(vec![m(2, "job", "api|web"), m(3, "env", "pro.*")])).expect("valid");
        let re = &v.matchers[0];
        assert!(re.matches("api"));
        assert!(re.matches("web"));
        assert!(!re.matches("xapi"));
        assert!(!re.matches("api-server"));
        let nre = &v.matchers[1];
        assert!(!nre.matches("prod"));
        assert!(nre.matches("preprod"));
        assert_eq!(v.matchers[0].to_pb(), m(2, "job", "api|web"));
    }

    #[test]
    fn limits_and_batch() {
        let mut r = req(vec![]);
        r.limit = -3;
        r.response_batch_size = 64;
        let v = series(&r).expect("valid");
        assert_eq!(v.limit, None);
        assert_eq!(v.batch_size, 64);
        r.limit = 5;
        assert_eq!(series(&r).expect("valid").limit, Some(5));
        r.response_batch_size = -1;
        assert_eq!(err(series(&r)).code(), Code::InvalidArgument);
    }
}
