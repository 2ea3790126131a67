//! Langfuse versions as they appear in image references.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

impl Version {
    pub const fn new(major: u64, minor: u64, patch: u64) -> Self {
        Self { major, minor, patch }
    }

    /// `3.29.0`, with an optional leading `v`; nothing else (no ranges, no pre-releases).
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.strip_prefix('v').unwrap_or(s);
        let mut parts = s.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = parts.next()?.parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(Self { major, minor, patch })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// What an image reference says about the version it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageVersion {
    /// A full `x.y.z` tag.
    Exact(Version),
    /// A tag that moves (`2`, `2.95`, `latest`) or a digest: the version cannot be read from it.
    Floating(String),
    /// No tag at all (implies `latest`).
    Untagged,
}

/// The tag of `registry:5000/org/image:tag@sha256:…`, ignoring a registry port.
pub fn image_tag(image: &str) -> Option<&str> {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last_segment = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last_segment.split_once(':').map(|(_, tag)| tag)
}

/// The repository part of an image reference (no tag, no digest).
pub fn image_repository(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    match without_digest.rfind(':') {
        Some(i) if !without_digest[i..].contains('/') => &without_digest[..i],
        _ => without_digest,
    }
}

pub fn image_version(image: &str) -> ImageVersion {
    match image_tag(image) {
        Some(tag) => match Version::parse(tag) {
            Some(v) => ImageVersion::Exact(v),
            None => ImageVersion::Floating(tag.to_string()),
        },
        None if image.contains('@') => ImageVersion::Floating("digest".into()),
        None => ImageVersion::Untagged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        assert_eq!(Version::parse("3.29.0"), Some(Version::new(3, 29, 0)));
        assert_eq!(Version::parse("v2.95.9"), Some(Version::new(2, 95, 9)));
        assert_eq!(Version::parse("3.29"), None);
        assert_eq!(Version::parse("3.29.0-rc1"), None);
        assert_eq!(Version::parse("3.29.0.1"), None);
        assert!(Version::new(2, 92, 0) > Version::new(2, 9, 99));
    }

    #[test]
    fn reads_image_references() {
        assert_eq!(
            image_version("langfuse/langfuse:2.95.9"),
            ImageVersion::Exact(Version::new(2, 95, 9))
        );
        assert_eq!(
            image_version("ghcr.io/langfuse/langfuse:2"),
            ImageVersion::Floating("2".into())
        );
        assert_eq!(image_version("registry:5000/langfuse/langfuse"), ImageVersion::Untagged);
        assert_eq!(
            image_version("registry:5000/langfuse/langfuse:2.93.1@sha256:abc"),
            ImageVersion::Exact(Version::new(2, 93, 1))
        );
        assert_eq!(
            image_version("langfuse/langfuse@sha256:abc"),
            ImageVersion::Floating("digest".into())
        );
        assert_eq!(
            image_repository("registry:5000/langfuse/langfuse:2.95.9"),
            "registry:5000/langfuse/langfuse"
        );
        assert_eq!(
            image_repository("registry:5000/langfuse/langfuse"),
            "registry:5000/langfuse/langfuse"
        );
        assert_eq!(image_repository("langfuse/langfuse@sha256:abc"), "langfuse/langfuse");
    }
}
