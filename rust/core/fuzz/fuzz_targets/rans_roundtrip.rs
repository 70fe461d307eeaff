//! Fuzz target `rans_roundtrip`: the frequency table and the 32-lane rANS coder.
//!
//! * Round trip: the input's histogram, normalized, codes the input; decoding that stream
//!   gives the input back and consumes the stream exactly.
//! * Hostile streams: the input is read as `[FreqTable] [symbol count: u16 LE] [stream]`
//!   (if it holds no valid table, the whole input is a stream under the input's own
//!   table, or under a fixed one). Decoding must not panic, and a stream that decodes
//!   must be canonical: the encoder, given the decoded symbols, writes exactly the bytes
//!   the decoder consumed (states in `[L, 2^31)`, one renormalization rule: the coder is
//!   a bijection, so any other outcome means encoder and decoder disagree).

#![no_main]

use fastckpt_core::container::bytes::{Reader, Writer};
use fastckpt_core::entropy::freq::{histogram, FreqTable, TOTAL};
use fastckpt_core::entropy::rans;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let own = FreqTable::normalize(&histogram(data));
    if let Some(table) = &own {
        let mut w = Writer::default();
        rans::encode(data, table, &mut w);
        let stream = w.into_inner();
        let mut out = vec![0u8; data.len()];
        let mut r = Reader::new(&stream);
        rans::decode(&mut r, table, &mut out).expect("an encoded stream must decode");
        assert!(out == data, "rANS round trip changed the symbols");
        assert_eq!(r.remaining(), 0, "decoder left stream bytes unread");
    }

    let mut r = Reader::new(data);
    if let Ok(table) = FreqTable::read(&mut r) {
        let n = match (r.u8(), r.u8()) {
            (Ok(a), Ok(b)) => u16::from_le_bytes([a, b]) as usize,
            _ => return,
        };
        hostile(&table, r.position(), data, n);
    } else {
        let table = own.unwrap_or_else(fixed_table);
        hostile(&table, 0, data, data.len().min(4096));
    }
});

/// Decodes `data[at..]` as a stream of `n` symbols under `table`.
fn hostile(table: &FreqTable, at: usize, data: &[u8], n: usize) {
    let mut out = vec![0u8; n];
    let mut r = Reader::new(&data[at..]);
    if rans::decode(&mut r, table, &mut out).is_err() {
        return;
    }
    assert!(
        out.iter().all(|&s| table.freq[s as usize] > 0),
        "decoded an absent symbol"
    );
    let consumed = &data[at..at + r.position()];
    let mut w = Writer::default();
    rans::encode(&out, table, &mut w);
    assert!(
        w.as_slice() == consumed,
        "a stream of {} bytes decodes to {n} symbols that encode to {} other bytes",
        consumed.len(),
        w.len()
    );
}

/// Four symbols, skewed (a table that `normalize` cannot fail to produce).
fn fixed_table() -> FreqTable {
    let mut freq = [0u16; 256];
    freq[0] = (TOTAL / 2) as u16;
    freq[1] = (TOTAL / 4) as u16;
    freq[7] = (TOTAL / 8) as u16;
    freq[255] = (TOTAL / 8) as u16;
    FreqTable { freq }
}
