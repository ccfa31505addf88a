//! Streaming decoding of a body into UTF-8 with `encoding_rs`, strictly: bytes that are not valid
//! in the encoding are an [`super::InputFault::InvalidEncoding`] (`S001`), never replaced.

use encoding_rs::{Decoder, DecoderResult, Encoding};
use std::io::{self, Read};

/// A reader that decodes another reader's bytes from an encoding into UTF-8.
pub(crate) struct DecodingReader<R> {
    inner: R,
    decoder: Decoder,
    encoding: &'static Encoding,
    input: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    out: Vec<u8>,
    out_pos: usize,
    done: bool,
}

impl<R: Read> DecodingReader<R> {
    /// Decodes from `encoding`; a byte-order mark of that encoding is removed.
    pub(crate) fn new(inner: R, encoding: &'static Encoding) -> Self {
        DecodingReader {
            inner,
            decoder: encoding.new_decoder_with_bom_removal(),
            encoding,
            input: vec![0; 64 * 1024],
            start: 0,
            end: 0,
            eof: false,
            out: Vec::with_capacity(64 * 1024 * 3),
            out_pos: 0,
            done: false,
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        self.out.clear();
        self.out_pos = 0;
        while self.out.is_empty() && !self.done {
            if self.start == self.end && !self.eof {
                let n = self.inner.read(&mut self.input)?;
                self.start = 0;
                self.end = n;
                if n == 0 {
                    self.eof = true;
                }
            }
            let needed = self
                .decoder
                .max_utf8_buffer_length_without_replacement(self.end - self.start)
                .unwrap_or(usize::MAX / 2)
                .max(16);
            self.out.resize(needed, 0);
            let (result, read, written) = self.decoder.decode_to_utf8_without_replacement(
                &self.input[self.start..self.end],
                &mut self.out,
                self.eof,
            );
            self.start += read;
            self.out.truncate(written);
            match result {
                DecoderResult::InputEmpty => {
                    if self.eof {
                        self.done = true;
                    }
                }
                DecoderResult::OutputFull => {}
                DecoderResult::Malformed(_, _) => {
                    return Err(super::invalid_encoding(self.encoding.name()));
                }
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for DecodingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.out_pos >= self.out.len() {
            if self.done {
                return Ok(0);
            }
            self.fill()?;
            if self.out.is_empty() {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.out.len() - self.out_pos);
        buf[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
        self.out_pos += n;
        Ok(n)
    }
}

/// Reads up to `n` bytes ahead without consuming them.
pub(crate) struct Peeked<R> {
    head: Vec<u8>,
    pos: usize,
    inner: R,
}

impl<R: Read> Peeked<R> {
    /// Reads the first `n` bytes (fewer at end of input).
    pub(crate) fn new(mut inner: R, n: usize) -> io::Result<Self> {
        let mut head = vec![0; n];
        let mut filled = 0;
        while filled < n {
            let k = inner.read(&mut head[filled..])?;
            if k == 0 {
                break;
            }
            filled += k;
        }
        head.truncate(filled);
        Ok(Peeked {
            head,
            pos: 0,
            inner,
        })
    }

    /// The bytes read ahead.
    pub(crate) fn head(&self) -> &[u8] {
        &self.head
    }
}

impl<R: Read> Read for Peeked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos < self.head.len() {
            let n = buf.len().min(self.head.len() - self.pos);
            buf[..n].copy_from_slice(&self.head[self.pos..self.pos + n]);
            self.pos += n;
            return Ok(n);
        }
        self.inner.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8], enc: &'static Encoding) -> io::Result<String> {
        let mut out = String::new();
        DecodingReader::new(bytes, enc).read_to_string(&mut out)?;
        Ok(out)
    }

    #[test]
    fn windows_1252_and_strict_utf8() {
        assert_eq!(
            decode(b"Gr\xfc\xdfe", encoding_rs::WINDOWS_1252).unwrap(),
            "Grüße"
        );
        assert_eq!(
            decode("Grüße".as_bytes(), encoding_rs::UTF_8).unwrap(),
            "Grüße"
        );
        assert_eq!(decode(b"\xef\xbb\xbfA", encoding_rs::UTF_8).unwrap(), "A");
        assert!(decode(b"Gr\xfc", encoding_rs::UTF_8).is_err());
        let big = "ä".repeat(100_000);
        assert_eq!(decode(big.as_bytes(), encoding_rs::UTF_8).unwrap(), big);
    }
}

/// Single-byte charsets decoded exactly, where encoding_rs follows the web and reads them as
/// Windows-1252: ISO-8859-1 (every byte is the code point of the same number) and US-ASCII
/// (bytes above 0x7F are invalid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ByteCharset {
    /// ISO-8859-1 / Latin-1.
    Latin1,
    /// US-ASCII.
    Ascii,
}

impl ByteCharset {
    /// The exact single-byte charset a label names, if it is one of these.
    pub(crate) fn for_label(label: &str) -> Option<ByteCharset> {
        match label.trim().to_ascii_lowercase().as_str() {
            "iso-8859-1" | "iso8859-1" | "iso_8859-1" | "iso_8859-1:1987" | "latin1" | "l1"
            | "cp819" | "ibm819" | "iso-ir-100" | "csisolatin1" => Some(ByteCharset::Latin1),
            "us-ascii" | "ascii" | "iso646-us" | "ansi_x3.4-1968" | "ansi_x3.4-1986" | "us"
            | "csascii" | "iso-ir-6" | "cp367" | "ibm367" => Some(ByteCharset::Ascii),
            _ => None,
        }
    }
}

/// Decodes a [`ByteCharset`] into UTF-8.
pub(crate) struct ByteReader<R> {
    inner: R,
    charset: ByteCharset,
    pending: Option<u8>,
}

impl<R: Read> ByteReader<R> {
    /// Wraps a reader.
    pub(crate) fn new(inner: R, charset: ByteCharset) -> Self {
        ByteReader {
            inner,
            charset,
            pending: None,
        }
    }
}

impl<R: Read> Read for ByteReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if let Some(b) = self.pending.take() {
            buf[0] = b;
            return Ok(1);
        }
        let mut raw = vec![0u8; (buf.len() / 2).max(1)];
        let n = self.inner.read(&mut raw)?;
        let mut w = 0;
        for &b in &raw[..n] {
            if b < 0x80 {
                buf[w] = b;
                w += 1;
            } else if self.charset == ByteCharset::Ascii {
                return Err(super::invalid_encoding("US-ASCII"));
            } else {
                let c = char::from(b);
                let mut tmp = [0u8; 2];
                let enc = c.encode_utf8(&mut tmp).as_bytes();
                if w + 2 <= buf.len() {
                    buf[w..w + 2].copy_from_slice(enc);
                    w += 2;
                } else {
                    buf[w] = enc[0];
                    self.pending = Some(enc[1]);
                    w += 1;
                }
            }
        }
        Ok(w)
    }
}

/// What a [`ByteGuard`] does with one byte.
pub(crate) enum Step {
    /// Passed on.
    Keep,
    /// Left out.
    Drop,
    /// The text is refused here.
    Fault(io::Error),
}

/// Checks the decoded text byte by byte on its way to a parser (which holds a token whole), and
/// may leave bytes out: the XML and CSV engines' guards.
pub(crate) trait ByteGuard {
    /// How many bytes at the start of `bytes` need no look of their own: the guard counts them
    /// as [`Self::step`] would, and they are passed on as they are.
    fn plain_run(&mut self, bytes: &[u8]) -> usize;
    /// One byte that needs a look.
    fn step(&mut self, b: u8) -> Step;
    /// The text ended: an error when it may not end here.
    fn at_end(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A reader passing another reader's bytes through a [`ByteGuard`]. Bytes before a fault are
/// passed on first; the fault comes with the next read, so problems earlier in the text are
/// reported first.
pub(crate) struct Guarded<R, G> {
    inner: R,
    guard: G,
    /// A fault to report on the next read.
    fault: Option<io::Error>,
}

impl<R: Read, G: ByteGuard> Guarded<R, G> {
    pub(crate) fn new(inner: R, guard: G) -> Self {
        Guarded {
            inner,
            guard,
            fault: None,
        }
    }

    /// The guard, with its counters (tests).
    #[cfg(test)]
    pub(crate) fn guard(&self) -> &G {
        &self.guard
    }
}

impl<R: Read, G: ByteGuard> Read for Guarded<R, G> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(e) = self.fault.take() {
            return Err(e);
        }
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let n = self.inner.read(buf)?;
            if n == 0 {
                self.guard.at_end()?;
                return Ok(0);
            }
            // Filtered in place: `w` (bytes kept) never passes `i` (bytes looked at).
            let (mut w, mut i) = (0, 0);
            while i < n {
                let run = self.guard.plain_run(&buf[i..n]);
                if run > 0 {
                    if w < i {
                        buf.copy_within(i..i + run, w);
                    }
                    (w, i) = (w + run, i + run);
                    continue;
                }
                let b = buf[i];
                i += 1;
                match self.guard.step(b) {
                    Step::Keep => {
                        buf[w] = b;
                        w += 1;
                    }
                    Step::Drop => {}
                    Step::Fault(e) => {
                        if w == 0 {
                            return Err(e);
                        }
                        self.fault = Some(e);
                        return Ok(w);
                    }
                }
            }
            if w > 0 {
                return Ok(w);
            }
        }
    }
}
