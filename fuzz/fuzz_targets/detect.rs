//! `detect` on arbitrary bytes: no panics, never `NeedMore` at `MAX_DETECT_BYTES`, and a
//! decision on a prefix is the decision on the whole input (a decided answer is final: the
//! caller stops reading and replays what it read).

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlink_protocols::detect::{detect, Detected, MAX_DETECT_BYTES};

fuzz_target!(|data: &[u8]| {
    let whole = detect(data);
    if data.len() >= MAX_DETECT_BYTES {
        assert_ne!(
            whole,
            Detected::NeedMore,
            "undecided at {} bytes",
            data.len()
        );
    }

    // Prefix consistency: every short prefix, and a spread of longer ones.
    let mut cuts: Vec<usize> = (0..data.len().min(64)).collect();
    let step = (data.len() / 16).max(1);
    cuts.extend((64..data.len()).step_by(step));
    cuts.push(data.len().saturating_sub(1));
    for cut in cuts {
        let prefix = detect(&data[..cut]);
        if let Detected::Protocol(_) = prefix {
            assert_eq!(
                prefix,
                whole,
                "{cut}-byte prefix decided differently from all {} bytes",
                data.len()
            );
        }
    }

    // The same bytes followed by enough more to force a decision: whatever was decided stays.
    if data.len() < MAX_DETECT_BYTES {
        let mut padded = data.to_vec();
        padded.resize(MAX_DETECT_BYTES, 0);
        let forced = detect(&padded);
        assert_ne!(forced, Detected::NeedMore, "undecided at MAX_DETECT_BYTES");
        if let Detected::Protocol(_) = whole {
            assert_eq!(whole, forced, "padding changed the decision");
        }
    }
});
