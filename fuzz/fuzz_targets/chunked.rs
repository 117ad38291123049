//! `ChunkedDecoder::feed` on arbitrary bytes, fed whole and split at arbitrary points. Every
//! byte it consumes is reported as data or framing, it always makes progress, and how the
//! input is split never changes the data, the framing count, where the body ends, or the
//! error.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlink_protocols::http1::{ChunkedDecoder, Error, Limits, Piece};

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    data: Vec<u8>,
    /// Framing bytes reported (only compared when there is no error: bytes scanned by a call
    /// that then fails are reported by no piece).
    framing: usize,
    /// Where the body ended, if it did.
    end: Option<usize>,
    error: Option<Error>,
}

/// Feeds `input` to a fresh decoder in parts ending at each of `cuts` (increasing).
fn run(input: &[u8], cuts: &[usize], limits: &Limits) -> Outcome {
    let mut decoder = ChunkedDecoder::new(limits);
    let mut out = Outcome {
        data: Vec::new(),
        framing: 0,
        end: None,
        error: None,
    };
    let mut start = 0;
    for &cut in cuts.iter().chain([&input.len()]) {
        let mut rest = &input[start..cut.max(start)];
        start = cut.max(start);
        loop {
            let offset = start - rest.len();
            if out.end.is_some() {
                // After the end, any further byte is an error and nothing is consumed.
                if !rest.is_empty() {
                    let error = decoder
                        .feed(rest)
                        .expect_err("bytes after the end accepted");
                    out.error = Some(error);
                    return out;
                }
                break;
            }
            let piece = match decoder.feed(rest) {
                Ok(piece) => piece,
                Err(error) => {
                    out.error = Some(error);
                    return out;
                }
            };
            match piece {
                Piece::Data(n) => {
                    assert!(n > 0 && n <= rest.len(), "{piece:?} of {}", rest.len());
                    out.data.extend_from_slice(&rest[..n]);
                    rest = &rest[n..];
                }
                Piece::Framing(n) => {
                    assert!(n > 0 && n <= rest.len(), "{piece:?} of {}", rest.len());
                    out.framing += n;
                    rest = &rest[n..];
                }
                Piece::End(n) => {
                    assert!(n > 0 && n <= rest.len(), "{piece:?} of {}", rest.len());
                    assert!(decoder.is_done());
                    out.framing += n;
                    out.end = Some(offset + n);
                    rest = &rest[n..];
                }
                Piece::NeedMore(n) => {
                    assert_eq!(n, rest.len(), "NeedMore must consume all of its input");
                    assert!(!decoder.is_done());
                    out.framing += n;
                    break;
                }
            }
        }
    }
    if out.error.is_none() {
        let consumed = out.end.unwrap_or(input.len());
        assert_eq!(
            out.data.len() + out.framing,
            consumed,
            "bytes lost or counted twice"
        );
    }
    out
}

/// A small xorshift, so split points come from the input and runs are reproducible.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fuzz_target!(|input: &[u8]| {
    // The first two bytes pick the limits and the splits; the rest is the body.
    let [choice, seed, body @ ..] = input else {
        return;
    };
    let limits = Limits {
        max_head_bytes: if choice & 1 == 0 { 64 } else { 64 << 10 },
        max_headers: 100,
    };
    let whole = run(body, &[], &limits);

    let every_byte: Vec<usize> = (1..body.len()).collect();
    let step = usize::from(choice >> 1) + 1;
    let fixed: Vec<usize> = (step..body.len()).step_by(step).collect();
    let mut state = u64::from(*seed) << 32 | u64::from(*choice) | 1;
    let mut random: Vec<usize> = (0..8)
        .map(|_| (next(&mut state) % (body.len() as u64 + 1)) as usize)
        .collect();
    random.sort_unstable();

    for cuts in [&every_byte, &fixed, &random] {
        let split = run(body, cuts, &limits);
        assert_eq!(split.data, whole.data, "data differs for cuts {cuts:?}");
        assert_eq!(split.end, whole.end, "end differs for cuts {cuts:?}");
        assert_eq!(split.error, whole.error, "error differs for cuts {cuts:?}");
        if whole.error.is_none() {
            assert_eq!(
                split.framing, whole.framing,
                "framing differs for cuts {cuts:?}"
            );
        }
    }
});
