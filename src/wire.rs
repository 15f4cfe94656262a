//! Reading the binary wire forms (manifests, member parts, envelopes) front to back.
//!
//! Every format here is a sequence of fixed-width or length-prefixed fields, decoded in one
//! pass. [`Reader`] hands out the fields and reports running out of bytes as [`Short`]; each
//! format turns that into its own error (`Truncated`, `TrailingBytes`).

/// The bytes did not have the length a field or a whole form needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Short {
    /// They ended before a field did.
    Truncated,
    /// This many bytes followed the end of the form.
    Trailing(usize),
}

/// Reads a byte string front to back.
pub(crate) struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`.
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self(bytes)
    }

    /// The next `n` bytes.
    pub(crate) fn take_slice(&mut self, n: usize) -> Result<&'a [u8], Short> {
        if self.0.len() < n {
            return Err(Short::Truncated);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    /// The next `N` bytes as an array.
    pub(crate) fn take<const N: usize>(&mut self) -> Result<[u8; N], Short> {
        // take_slice returned exactly N bytes.
        Ok(self.take_slice(N)?.try_into().expect("N bytes"))
    }

    /// The next byte.
    pub(crate) fn u8(&mut self) -> Result<u8, Short> {
        Ok(self.take::<1>()?[0])
    }

    /// The next big-endian `u16`.
    pub(crate) fn u16(&mut self) -> Result<u16, Short> {
        self.take().map(u16::from_be_bytes)
    }

    /// The next big-endian `u32`.
    pub(crate) fn u32(&mut self) -> Result<u32, Short> {
        self.take().map(u32::from_be_bytes)
    }

    /// The next big-endian `u64`.
    pub(crate) fn u64(&mut self) -> Result<u64, Short> {
        self.take().map(u64::from_be_bytes)
    }

    /// How many bytes are left.
    pub(crate) fn remaining(&self) -> usize {
        self.0.len()
    }

    /// Checks that exactly `expected` bytes remain: [`Short::Truncated`] if fewer,
    /// [`Short::Trailing`] (with how many more) if more.
    pub(crate) fn expect_remaining(&self, expected: usize) -> Result<(), Short> {
        match self.0.len() {
            n if n < expected => Err(Short::Truncated),
            n if n > expected => Err(Short::Trailing(n - expected)),
            _ => Ok(()),
        }
    }
}
