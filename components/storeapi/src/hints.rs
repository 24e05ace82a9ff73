//! Packing and unpacking `hintspb` messages in the `google.protobuf.Any` hint fields, with the type
//! URLs Thanos uses (`type.googleapis.com/hintspb.<Message>`).

use prost::Message;
use prost_types::Any;
use tonic::Status;

use crate::pb::hintspb::{
    LabelNamesRequestHints, LabelNamesResponseHints, LabelValuesRequestHints,
    LabelValuesResponseHints, SeriesRequestHints, SeriesResponseHints,
};

/// A `hintspb` message with its fully qualified proto name.
pub trait Hint: Message + Default {
    /// The proto name, e.g. `hintspb.SeriesRequestHints`.
    const NAME: &'static str;

    /// The `Any` type URL.
    fn type_url() -> String {
        format!("type.googleapis.com/{}", Self::NAME)
    }
}

macro_rules! hint {
    ($($t:ident),*) => {$(
        impl Hint for $t {
            const NAME: &'static str = concat!("hintspb.", stringify!($t));
        }
    )*};
}
hint!(
    SeriesRequestHints,
    SeriesResponseHints,
    LabelNamesRequestHints,
    LabelNamesResponseHints,
    LabelValuesRequestHints,
    LabelValuesResponseHints
);

/// Packs a hint into an `Any`.
pub fn pack<H: Hint>(h: &H) -> Any {
    Any {
        type_url: H::type_url(),
        value: h.encode_to_vec(),
    }
}

/// Unpacks a hint; a different type or undecodable bytes are `InvalidArgument`.
pub fn unpack<H: Hint>(any: &Any) -> Result<H, Status> {
    if any.type_url != H::type_url() {
        return Err(Status::invalid_argument(format!(
            "hints of type {:?}, expected {:?}",
            any.type_url,
            H::type_url()
        )));
    }
    H::decode(any.value.as_slice())
        .map_err(|e| Status::invalid_argument(format!("decode {}: {e}", H::NAME)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::hintspb::Block;

    #[test]
    fn round_trip_and_type_checks() {
        let h = SeriesResponseHints {
            queried_blocks: vec![Block {
                id: "01ARZ3NDEKTSV4RRFFQ69G5FAV".into(),
            }],
            query_stats: None,
        };
        let any = pack(&h);
        assert_eq!(
            any.type_url,
            "type.googleapis.com/hintspb.SeriesResponseHints"
        );
        assert_eq!(unpack::<SeriesResponseHints>(&any).expect("same type"), h);
        let e = unpack::<SeriesRequestHints>(&any).expect_err("other type");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        let bad = Any {
            type_url: SeriesResponseHints::type_url(),
            value: vec![0x0a, 0x05, 0x01],
        };
        assert!(unpack::<SeriesResponseHints>(&bad).is_err());
    }
}
