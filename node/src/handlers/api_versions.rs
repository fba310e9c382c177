//! ApiVersions (v0–v3; KIP-511 for versions we do not serve).

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};
use kafka_protocol::ResponseError;

use crate::connection::{frame, Pending};
use crate::protocol::{encode_response, served, FrameError, Request, SERVED};

pub fn handle(req: &Request) -> Result<Pending, FrameError> {
    let (_, max) = served(ApiKey::ApiVersions).expect("ApiVersions is served");
    let mut resp = ApiVersionsResponse::default();
    resp.api_keys = SERVED
        .iter()
        .map(|&(key, min, max)| {
            let mut v = ApiVersion::default();
            v.api_key = key as i16;
            v.min_version = min;
            v.max_version = max;
            v
        })
        .collect();
    // A newer ApiVersions than we serve: answer at v0 with the error and
    // our ranges, so the client can pick a version we speak.
    let version = if req.version > max {
        resp.error_code = ResponseError::UnsupportedVersion.code();
        0
    } else {
        req.version
    };
    frame(encode_response(
        ApiKey::ApiVersions,
        version,
        req.header.correlation_id,
        &resp,
    ))
}
