//! Value encoding: one format-version byte, then JSON.
//!
//! JSON (serde_json, already a dependency of core) rather than a compact
//! binary format because [`Record`] is an internally tagged enum flattened
//! into its envelope and carries free-form `serde_json::Value` outputs:
//! non-self-describing formats (bincode, postcard) cannot decode those at
//! all, and a journal record is a few dozen bytes either way. JSON also keeps
//! a damaged database inspectable with nothing but a hex dump.
//!
//! The leading byte is the value's format version. This build writes and
//! reads [`FORMAT`]; anything else (an empty value, a newer format, garbage)
//! decodes to [`StoreError::Corrupt`] naming the job and key — never a panic.
//!
//! [`Record`]: orchestrator_core::Record

use orchestrator_core::{JobId, StoreError};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The value format this build writes and reads.
pub(crate) const FORMAT: u8 = 1;

/// `FORMAT` followed by the JSON of `value`.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    encode_with_prefix(&[], value)
}

/// `FORMAT`, then `prefix` (a fixed-width header), then the JSON of `value`.
pub(crate) fn encode_with_prefix<T: Serialize>(
    prefix: &[u8],
    value: &T,
) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(128);
    out.push(FORMAT);
    out.extend_from_slice(prefix);
    // Serializing the core types cannot fail (string map keys only), but a
    // custom runner output is the caller's data: refuse it, never panic.
    serde_json::to_writer(&mut out, value)
        .map_err(|e| StoreError::Invalid(format!("value cannot be encoded: {e}")))?;
    Ok(out)
}

/// Decodes a value written by [`encode`]; `key` names it in errors.
pub(crate) fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    job: Option<&JobId>,
    key: impl FnOnce() -> String,
) -> Result<T, StoreError> {
    let body = body(bytes, 0, job, key)?;
    serde_json::from_slice(body.0).map_err(|e| corrupt(job, body.1, format!("undecodable: {e}")))
}

/// Splits a value written by [`encode_with_prefix`] into its `N`-byte
/// header and the JSON that follows (decoded lazily by the caller).
pub(crate) fn split_header<'a, const N: usize>(
    bytes: &'a [u8],
    job: Option<&JobId>,
    key: impl FnOnce() -> String,
) -> Result<([u8; N], &'a [u8], String), StoreError> {
    let (rest, key) = body(bytes, N, job, key)?;
    let mut header = [0u8; N];
    header.copy_from_slice(&rest[..N]);
    Ok((header, &rest[N..], key))
}

/// Decodes the JSON part split off by [`split_header`].
pub(crate) fn decode_json<T: DeserializeOwned>(
    json: &[u8],
    job: Option<&JobId>,
    key: String,
) -> Result<T, StoreError> {
    serde_json::from_slice(json).map_err(|e| corrupt(job, key, format!("undecodable: {e}")))
}

/// Checks the format byte and that at least `min` bytes follow it.
fn body<'a>(
    bytes: &'a [u8],
    min: usize,
    job: Option<&JobId>,
    key: impl FnOnce() -> String,
) -> Result<(&'a [u8], String), StoreError> {
    let key = key();
    match bytes.split_first() {
        None => Err(corrupt(job, key, "empty value".into())),
        Some((&FORMAT, rest)) if rest.len() >= min => Ok((rest, key)),
        Some((&FORMAT, rest)) => Err(corrupt(
            job,
            key,
            format!(
                "value truncated: {} bytes, expected at least {min}",
                rest.len()
            ),
        )),
        Some((&v, _)) => Err(corrupt(
            job,
            key,
            format!("unsupported value format {v} (this build reads format {FORMAT})"),
        )),
    }
}

/// A [`StoreError::Corrupt`].
pub(crate) fn corrupt(job: Option<&JobId>, key: String, message: String) -> StoreError {
    StoreError::Corrupt {
        job: job.cloned(),
        key,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> String {
        "summaries/job-1".into()
    }

    #[test]
    fn round_trips_and_rejects_bad_versions_and_garbage() {
        let job: JobId = "job-1".parse().expect("valid id");
        let bytes = encode(&vec![1u32, 2, 3]).expect("encodes");
        assert_eq!(bytes[0], FORMAT);
        let back: Vec<u32> = decode(&bytes, Some(&job), key).expect("decodes");
        assert_eq!(back, [1, 2, 3]);

        for (bad, what) in [
            (&b""[..], "empty value"),
            (&[9u8, b'[', b']'][..], "unsupported value format 9"),
            (&[FORMAT, b'{'][..], "undecodable"),
        ] {
            match decode::<Vec<u32>>(bad, Some(&job), key) {
                Err(StoreError::Corrupt {
                    job: Some(j),
                    key,
                    message,
                }) => {
                    assert_eq!(j, job);
                    assert_eq!(key, "summaries/job-1");
                    assert!(message.contains(what), "{message}");
                }
                other => panic!("{what}: expected Corrupt, got {other:?}"),
            }
        }
    }

    #[test]
    fn headers_split_and_short_values_are_corrupt() {
        let bytes = encode_with_prefix(&7u64.to_be_bytes(), &"x").expect("encodes");
        let (h, json, name) = split_header::<8>(&bytes, None, key).expect("splits");
        assert_eq!(u64::from_be_bytes(h), 7);
        assert_eq!(
            decode_json::<String>(json, None, name).expect("decodes"),
            "x"
        );
        assert!(matches!(
            split_header::<8>(&[FORMAT, 1, 2], None, key),
            Err(StoreError::Corrupt { message, .. }) if message.contains("truncated")
        ));
    }
}
