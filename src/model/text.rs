//! Strings taken from targets are bounded before they become a label, an event or a log line:
//! a hostile or broken target must not grow the exposition, the memory or the log.

/// The longest string kept from a target, in bytes.
pub const MAX_TARGET_TEXT: usize = 256;

/// `s` cut to at most [`MAX_TARGET_TEXT`] bytes (at a character boundary), marked with `…`
/// when cut.
pub fn bounded(s: &str) -> String {
    bounded_to(s, MAX_TARGET_TEXT)
}

/// `s` cut to at most `max` bytes (at least 4), likewise.
pub fn bounded_to(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.max(4) - '…'.len_utf8();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_strings_are_cut_at_a_character_boundary() {
        assert_eq!(bounded("3.0.2"), "3.0.2");
        let long = "é".repeat(MAX_TARGET_TEXT);
        let cut = bounded(&long);
        assert!(cut.len() <= MAX_TARGET_TEXT && cut.ends_with('…'), "{}", cut.len());
        assert_eq!(bounded(&"x".repeat(3 << 20)).len(), MAX_TARGET_TEXT);
    }
}
