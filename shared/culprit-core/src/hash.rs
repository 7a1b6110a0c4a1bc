//! FNV-1a 64, the one stable hash of the workspace: the same bytes give the same value in every
//! process, build and Rust version (unlike `DefaultHasher`, whose output may change), so ids that
//! are stored or compared across runs and hashed features stay put. Callers that need well-mixed
//! low bits apply their own finaliser to [`Fnv1a::value`].

const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

/// An FNV-1a 64 state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(OFFSET)
    }
}

impl Fnv1a {
    pub fn new() -> Fnv1a {
        Fnv1a::default()
    }

    /// The hash of `bytes` alone.
    pub fn of(bytes: &[u8]) -> u64 {
        let mut h = Fnv1a::new();
        h.write(bytes);
        h.value()
    }

    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(PRIME);
        }
    }

    /// `bytes` and then a 0xff separator (a byte UTF-8 never holds), so that the fields
    /// `("ab", "c")` and `("a", "bc")` hash differently.
    pub fn write_field(&mut self, bytes: &[u8]) {
        self.write(bytes);
        self.write(&[0xff]);
    }

    pub fn value(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_published_fnv1a_64_test_vectors() {
        assert_eq!(Fnv1a::of(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(Fnv1a::of(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(Fnv1a::of(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn fields_are_separated() {
        let fields = |parts: &[&str]| {
            let mut h = Fnv1a::new();
            parts.iter().for_each(|p| h.write_field(p.as_bytes()));
            h.value()
        };
        assert_ne!(fields(&["ab", "c"]), fields(&["a", "bc"]));
    }
}
