//! "Did you mean" suggestions for near misses (`memroy_mb` for `memory_mb`).

/// The closest candidate to `typed`, if one is close enough to be a likely typo.
pub fn did_you_mean<'a>(typed: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|candidate| (strsim::jaro_winkler(typed, candidate), candidate))
        .filter(|(score, candidate)| *score > 0.8 && *candidate != typed)
        .max_by(|left, right| left.0.total_cmp(&right.0))
        .map(|(_, candidate)| candidate)
}

#[cfg(test)]
mod tests {
    use super::did_you_mean;

    #[test]
    fn suggests_close_keys_only() {
        let keys = ["memory_mb", "swap_mb", "cores", "mount_points"];
        assert_eq!(did_you_mean("memroy_mb", keys), Some("memory_mb"));
        assert_eq!(did_you_mean("core", keys), Some("cores"));
        assert_eq!(did_you_mean("zzz", keys), None);
    }
}
