//! Classifies the message-size error at the edge: an oversized request is RESOURCE_EXHAUSTED.
//!
//! tonic rejects a request above `max_decoding_message_size` before any handler runs, answering
//! OUT_OF_RANGE ("decoded message length too large"). Every other gRPC implementation — the C++
//! core behind Triton, grpc-go, grpc-java — answers RESOURCE_EXHAUSTED, and that is what Kiln's
//! conventions and Triton's clients expect. This response mapper rewrites exactly that status
//! (trailers-only responses, where tonic puts it) and nothing else. Oversized responses are
//! caught earlier, in the handler, which returns RESOURCE_EXHAUSTED itself.

use http::HeaderValue;

const GRPC_STATUS: &str = "grpc-status";
const GRPC_MESSAGE: &str = "grpc-message";
const OUT_OF_RANGE: &str = "11";
const RESOURCE_EXHAUSTED: &str = "8";

/// Rewrites tonic's OUT_OF_RANGE "message too large" status into RESOURCE_EXHAUSTED.
pub fn classify_too_large<B>(mut resp: http::Response<B>) -> http::Response<B> {
    let headers = resp.headers_mut();
    let is_too_large = headers.get(GRPC_STATUS).is_some_and(|s| s == OUT_OF_RANGE)
        && headers.get(GRPC_MESSAGE).is_some_and(|m| {
            let m = m.as_bytes();
            contains(m, b"message length too large")
                || contains(m, b"message%20length%20too%20large")
        });
    if is_too_large {
        headers.insert(GRPC_STATUS, HeaderValue::from_static(RESOURCE_EXHAUSTED));
    }
    resp
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_status(code: tonic::Code, msg: &str) -> http::Response<()> {
        let mut resp = http::Response::new(());
        tonic::Status::new(code, msg)
            .add_header(resp.headers_mut())
            .unwrap();
        resp
    }

    #[test]
    fn rewrites_only_the_size_error() {
        let too_large = with_status(
            tonic::Code::OutOfRange,
            "Error, decoded message length too large: found 9 bytes, the limit is: 4 bytes",
        );
        let resp = classify_too_large(too_large);
        assert_eq!(resp.headers()[GRPC_STATUS], RESOURCE_EXHAUSTED);
        let other = classify_too_large(with_status(tonic::Code::OutOfRange, "index 3"));
        assert_eq!(other.headers()[GRPC_STATUS], OUT_OF_RANGE);
        let ok = classify_too_large(http::Response::new(()));
        assert!(ok.headers().get(GRPC_STATUS).is_none());
    }
}
