//! Wire compatibility: our messages encode to the bytes the Thanos field numbers dictate
//! (hand-computed protobuf encodings).

use prost::Message;
use strata_storeapi::pb::info::{InfoResponse, StoreInfo};
use strata_storeapi::pb::thanos::{
    AggrChunk, Chunk, Label, LabelMatcher, Series, SeriesBatch, SeriesRequest, SeriesResponse,
    ZLabelSet, series_response,
};

#[test]
fn label_matcher_bytes() {
    let m = LabelMatcher {
        r#type: 2, // RE
        name: "job".into(),
        value: "a".into(),
    };
    // field 1 varint 2; field 2 len 3 "job"; field 3 len 1 "a"
    assert_eq!(m.encode_to_vec(), b"\x08\x02\x12\x03job\x1a\x01a");
}

#[test]
fn series_request_new_fields() {
    let r = SeriesRequest {
        min_time: 1,
        max_time: 2,
        skip_chunks: true,
        without_replica_labels: vec!["r".into()],
        limit: 5,
        response_batch_size: 3,
        ..Default::default()
    };
    let want: &[u8] = &[
        0x08, 0x01, // min_time = 1 (field 1)
        0x10, 0x02, // max_time = 2 (field 2)
        0x40, 0x01, // skip_chunks (field 8)
        0x72, 0x01, b'r', // without_replica_labels (field 14, length-delimited)
        0x78, 0x05, // limit (field 15)
        0x80, 0x01, 0x03, // response_batch_size (field 16: tag 128 as a two-byte varint)
    ];
    assert_eq!(r.encode_to_vec(), want);
}

#[test]
fn series_batch_frame_and_chunk_bytes() {
    let s = Series {
        labels: vec![Label {
            name: "a".into(),
            value: "b".into(),
        }],
        chunks: vec![AggrChunk {
            min_time: 1,
            max_time: 2,
            raw: Some(Chunk {
                r#type: 1, // HISTOGRAM
                data: vec![0xaa].into(),
                hash: 7,
            }),
            ..Default::default()
        }],
    };
    let chunk = [0x08, 0x01, 0x12, 0x01, 0xaa, 0x18, 0x07];
    let mut aggr = vec![0x08, 0x01, 0x10, 0x02, 0x1a, chunk.len() as u8];
    aggr.extend(chunk);
    let label = [0x0a, 0x01, b'a', 0x12, 0x01, b'b'];
    let mut series = vec![0x0a, label.len() as u8];
    series.extend(label);
    series.extend([0x12, aggr.len() as u8]);
    series.extend(&aggr);
    assert_eq!(s.encode_to_vec(), series);

    let frame = SeriesResponse {
        result: Some(series_response::Result::Batch(SeriesBatch {
            series: vec![s.clone()],
        })),
    };
    let mut batch = vec![0x0a, series.len() as u8];
    batch.extend(&series);
    let mut want = vec![0x22, batch.len() as u8]; // batch is field 4 of the oneof
    want.extend(&batch);
    assert_eq!(frame.encode_to_vec(), want);

    let warn = SeriesResponse {
        result: Some(series_response::Result::Warning("w".into())),
    };
    assert_eq!(warn.encode_to_vec(), b"\x12\x01w");
}

#[test]
fn info_response_bytes() {
    let r = InfoResponse {
        label_sets: vec![ZLabelSet {
            labels: vec![Label {
                name: "c".into(),
                value: "d".into(),
            }],
        }],
        component_type: "store".into(),
        store: Some(StoreInfo {
            min_time: 1,
            supports_without_replica_labels: true,
            ..Default::default()
        }),
        ..Default::default()
    };
    let want: &[u8] = &[
        0x0a, 0x08, 0x0a, 0x06, 0x0a, 0x01, b'c', 0x12, 0x01, b'd', // label_sets (1)
        0x12, 0x05, b's', b't', b'o', b'r', b'e', // ComponentType (2)
        0x1a, 0x04, 0x08, 0x01, 0x28,
        0x01, // store (3): min_time (1), supports_without_replica_labels (5)
    ];
    assert_eq!(r.encode_to_vec(), want);
    assert_eq!(InfoResponse::decode(want).expect("decode"), r);
}
