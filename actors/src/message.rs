//! A published message as the node holds it: once, shared by every shard's
//! retro buffer and every subscriber queue that receives it.

use bytes::Bytes;
use kraken_protocol::response::message_header;
use kraken_protocol::OutMessage;

/// One published message.
#[derive(Debug)]
pub struct Message {
    /// Node-wide publish sequence number; orders messages across shards and
    /// makes `register` horizons exact.
    pub seq: u64,
    /// Publish time, nanoseconds since the Unix epoch (monotonic within the
    /// node); `retro_subscribe` horizons compare against it.
    pub time_ns: u64,
    /// The publishing client, never a recipient of its own message.
    pub publisher: u64,
    /// Every topic the message names, in publish order (repeats kept).
    pub topics: Vec<Bytes>,
    /// The payload, shared and never copied per subscriber.
    pub payload: Bytes,
    /// `MESSAGE <all topics> <len>\r\n`, built once: the header of every
    /// delivery to a subscriber that holds all of the message's topics.
    pub full_header: Bytes,
}

impl Message {
    pub fn new(seq: u64, time_ns: u64, publisher: u64, topics: Vec<Bytes>, payload: Bytes) -> Self {
        let refs: Vec<&[u8]> = topics.iter().map(|t| &t[..]).collect();
        let full_header = message_header(&refs, payload.len());
        Message {
            seq,
            time_ns,
            publisher,
            topics,
            payload,
            full_header,
        }
    }

    /// The delivery of this message to a subscriber holding the topics at
    /// `matched` (indices into `topics`, ascending).
    pub fn delivery(&self, matched: &[u32]) -> OutMessage {
        let header = if matched.len() == self.topics.len() {
            self.full_header.clone()
        } else {
            let refs: Vec<&[u8]> = matched
                .iter()
                .map(|&i| &self.topics[i as usize][..])
                .collect();
            message_header(&refs, self.payload.len())
        };
        OutMessage {
            header,
            payload: self.payload.clone(),
        }
    }

    /// Bytes this message costs a subscriber queue (its limit's unit).
    pub fn queued_bytes(&self) -> usize {
        self.payload.len() + self.full_header.len()
    }
}
