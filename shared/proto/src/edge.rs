//! Protocol edge helpers shared by every Kiln gRPC server and client (STYLE.md habit 7): statuses
//! produced by tonic itself are given the codes Kiln promises, the caller's `grpc-timeout` is
//! read, status codes get their canonical names ([`code_name`]), and the addresses of other
//! services are read one way everywhere ([`endpoint_url`], [`advertised_url`]).
//!
//! tonic 0.14 answers OUT_OF_RANGE ("decoded message length too large") when a message exceeds
//! `max_decoding_message_size` (and the same for encoding), before any handler runs. Kiln's
//! contract, like gRPC C++ and Triton, is RESOURCE_EXHAUSTED for a message over the size limit,
//! so [`reclassify`] rewrites exactly that status on the way out. Likewise a body that is not a
//! protobuf message at all (tonic: INTERNAL "failed to decode Protobuf message") is the caller's
//! fault: INVALID_ARGUMENT. And a status message longer than [`MAX_STATUS_MESSAGE`] bytes (one
//! that quotes a huge caller-supplied name) is cut there: gRPC clients refuse metadata over 16 KiB
//! and would report a confusing RESOURCE_EXHAUSTED of their own. It runs on every response but
//! only looks further at the rare ones that carry a `grpc-status` header.

use std::time::Duration;
use tonic::codegen::http::{HeaderValue, Response};

use tonic::{Code, Status};

const GRPC_STATUS: &str = "grpc-status";
const GRPC_MESSAGE: &str = "grpc-message";

/// Longest `grpc-message` (percent-encoded bytes) a Kiln server sends.
pub const MAX_STATUS_MESSAGE: usize = 2048;

/// Whether `status` is tonic's complaint about a message over the size limit.
pub fn is_size_limit(status: &Status) -> bool {
    status.code() == Code::OutOfRange && status.message().contains("message length too large")
}

/// The code Kiln promises instead of the one tonic gave `status`, if they differ (see the
/// module docs).
fn promised_code(status: &Status) -> Option<Code> {
    if is_size_limit(status) {
        Some(Code::ResourceExhausted)
    } else if status.code() == Code::Internal
        && status
            .message()
            .starts_with("failed to decode Protobuf message")
    {
        Some(Code::InvalidArgument)
    } else {
        None
    }
}

/// [`reclassify`] for a status a handler passes on from a request stream: it reaches the
/// caller in the trailers of a streaming answer, which `reclassify` does not see.
pub fn reclassify_status(status: Status) -> Status {
    match promised_code(&status) {
        Some(code) => Status::new(code, status.message()),
        None => status,
    }
}

/// Rewrites tonic's size-limit OUT_OF_RANGE into RESOURCE_EXHAUSTED and its protobuf decode
/// INTERNAL into INVALID_ARGUMENT, and cuts over-long status messages; leaves all else alone.
pub fn reclassify<B>(mut response: Response<B>) -> Response<B> {
    let Some(code) = response.headers().get(GRPC_STATUS).map(|v| v.as_bytes()) else {
        return response;
    };
    let rewrite = match code {
        b"11" | b"13" => Status::from_header_map(response.headers())
            .and_then(|s| promised_code(&s))
            .map(|code| match code {
                Code::ResourceExhausted => "8",
                _ => "3",
            }),
        _ => None,
    };
    if let Some(code) = rewrite {
        response
            .headers_mut()
            .insert(GRPC_STATUS, HeaderValue::from_static(code));
    }
    let long = response
        .headers()
        .get(GRPC_MESSAGE)
        .filter(|m| m.len() > MAX_STATUS_MESSAGE)
        .map(|m| truncated(m.as_bytes()));
    if let Some(message) = long {
        response.headers_mut().insert(GRPC_MESSAGE, message);
    }
    response
}

/// A percent-encoded message cut to [`MAX_STATUS_MESSAGE`] bytes (never inside a `%XX`), with
/// an ellipsis.
fn truncated(encoded: &[u8]) -> HeaderValue {
    const SUFFIX: &[u8] = b"%E2%80%A6%20(truncated)";
    let mut end = MAX_STATUS_MESSAGE - SUFFIX.len();
    while end > 0 && encoded[end - 2..end].contains(&b'%') {
        end -= 1;
    }
    let mut cut = encoded[..end].to_vec();
    cut.extend_from_slice(SUFFIX);
    HeaderValue::from_bytes(&cut).unwrap_or_else(|_| HeaderValue::from_static("(truncated)"))
}

/// Parses a `grpc-timeout` header value (`"250m"`, `"3S"`, at most 8 digits and one unit).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let unit_at = value.len().checked_sub(1)?;
    // Not `split_at`: it panics when the last character is not ASCII.
    let (digits, unit) = value.split_at_checked(unit_at)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The canonical upper-case name of a gRPC status code (`"DEADLINE_EXCEEDED"`), as in metric
/// labels and reports.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The URL of a configured service address (`--admin`, `--monitor`, ...): `http://` is added to
/// a bare `host:port` (a host name is fine); the result must be an `http` or `https` URI with a
/// host. The error says what is wrong with `value`.
pub fn endpoint_url(value: &str) -> Result<String, String> {
    let value = value.trim();
    let url = if value.contains("://") {
        value.to_owned()
    } else {
        format!("http://{value}")
    };
    let uri: tonic::transport::Uri = url
        .parse()
        .map_err(|e| format!("{value:?} is not a URL: {e}"))?;
    if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() {
        Ok(url)
    } else {
        Err(format!("{value:?} must be host:port or http://host:port"))
    }
}

/// The URL of a service that advertised itself as `value` in the store (an election value): a
/// socket address `ip:port`, or an explicit `http(s)://` URL; anything else (a bare name) is not
/// an address another process can dial, so `None`.
pub fn advertised_url(value: &str) -> Option<String> {
    let value = value.trim();
    if let Ok(addr) = value.parse::<std::net::SocketAddr>() {
        return Some(format!("http://{addr}"));
    }
    if value.starts_with("http://") || value.starts_with("https://") {
        return endpoint_url(value).ok();
    }
    None
}

#[cfg(test)]
mod tests {
    use tonic::codegen::http::HeaderMap;

    use super::*;

    fn response_with(status: Status) -> Response<()> {
        let mut headers = HeaderMap::new();
        status.add_header(&mut headers).unwrap();
        let mut response = Response::new(());
        *response.headers_mut() = headers;
        response
    }

    fn code_of(response: &Response<()>) -> Code {
        Status::from_header_map(response.headers()).unwrap().code()
    }

    #[test]
    fn size_limit_becomes_resource_exhausted() {
        let too_big = Status::out_of_range(
            "Error, decoded message length too large: found 131106 bytes, the limit is: 65536 bytes",
        );
        assert_eq!(
            code_of(&reclassify(response_with(too_big))),
            Code::ResourceExhausted
        );
    }

    #[test]
    fn other_statuses_are_untouched() {
        for status in [
            Status::out_of_range("index 7 out of range"),
            Status::invalid_argument("message length too large"),
            Status::ok(""),
        ] {
            let code = status.code();
            assert_eq!(code_of(&reclassify(response_with(status))), code);
        }
        let plain = reclassify(Response::new(()));
        assert!(plain.headers().get(GRPC_STATUS).is_none());
    }

    #[test]
    fn undecodable_bodies_are_invalid_arguments() {
        let garbage = Status::internal("failed to decode Protobuf message: invalid varint");
        assert_eq!(
            code_of(&reclassify(response_with(garbage))),
            Code::InvalidArgument
        );
        let other = Status::internal("worker crashed");
        assert_eq!(code_of(&reclassify(response_with(other))), Code::Internal);
    }

    #[test]
    fn statuses_from_request_streams_get_the_same_codes() {
        let too_big = Status::out_of_range("Error, decoded message length too large: found 9");
        assert_eq!(reclassify_status(too_big).code(), Code::ResourceExhausted);
        let garbage = Status::internal("failed to decode Protobuf message: invalid varint");
        let mapped = reclassify_status(garbage);
        assert_eq!(mapped.code(), Code::InvalidArgument);
        assert!(mapped.message().contains("invalid varint"));
        let other = Status::cancelled("gone");
        assert_eq!(reclassify_status(other).code(), Code::Cancelled);
    }

    #[test]
    fn long_messages_are_cut() {
        let name = "m%".repeat(40_000);
        let status = Status::not_found(format!("unknown model {name:?}"));
        let response = reclassify(response_with(status));
        let header = response.headers().get(GRPC_MESSAGE).unwrap();
        assert!(header.len() <= MAX_STATUS_MESSAGE, "{}", header.len());
        let status = Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), Code::NotFound);
        assert!(status.message().starts_with("unknown model \"m%m%"));
        assert!(
            status.message().ends_with("… (truncated)"),
            "{}",
            status.message()
        );
        let short = Status::not_found("unknown model \"x\"");
        let kept = reclassify(response_with(short));
        assert_eq!(
            Status::from_header_map(kept.headers()).unwrap().message(),
            "unknown model \"x\""
        );
    }

    #[test]
    fn parses_grpc_timeout_values() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(
            parse_grpc_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in ["", "m", "123456789m", "12x", "-1S", "1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }
}
