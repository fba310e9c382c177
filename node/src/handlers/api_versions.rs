//! ApiVersions (v0–v3; KIP-511 for versions we do not serve).

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::ResponseError;

use crate::connection::{frame, Pending};
use crate::protocol::{decode_body, encode_response, served, FrameError, Request, SERVED};

/// KIP-511's rule for client software names and versions.
fn valid_software_field(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'.')
}

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
        let valid = match decode_body::<ApiVersionsRequest>(req, "ApiVersions request") {
            Ok(body) if req.version >= 3 => {
                valid_software_field(&body.client_software_name)
                    && valid_software_field(&body.client_software_version)
            }
            Ok(_) => true,
            Err(_) => false,
        };
        if !valid {
            resp.error_code = ResponseError::InvalidRequest.code();
        }
        req.version
    };
    frame(encode_response(
        ApiKey::ApiVersions,
        version,
        req.header.correlation_id,
        &resp,
    ))
}

#[cfg(test)]
mod tests {
    use super::valid_software_field;

    #[test]
    fn software_names_follow_kip_511() {
        for ok in ["librdkafka", "apache-kafka-java", "2.0.2", "a"] {
            assert!(valid_software_field(ok), "{ok}");
        }
        for bad in ["", "-x", "x-", "a b", "ünï", "x/y"] {
            assert!(!valid_software_field(bad), "{bad}");
        }
    }
}
