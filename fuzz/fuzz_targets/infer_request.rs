//! Protobuf bytes of a `ModelInferRequest`, as a worker or gateway receives them, through the
//! gateway's and the worker's request handling (see `kiln_fuzz::serve`). Decoding errors are
//! fine; panics are not, nor is a request that decodes but breaks a decoding invariant.
#![no_main]

use kiln_proto::inference::ModelInferRequest;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(
    init: {
        std::sync::LazyLock::force(&kiln_fuzz::TARGETS);
    },
    |data: &[u8]| {
        if let Ok(req) = ModelInferRequest::decode(data) {
            kiln_fuzz::serve(req);
        }
    }
);
