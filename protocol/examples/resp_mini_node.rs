//! A minimal single-process pub/sub server on the RESP codec, to try the
//! codec with real Redis clients (`redis-cli`, redis-py) and to show how a
//! connection uses it. Not the node: blocking sockets, one thread per
//! connection, one lock around the channel table, no history (so
//! `KRAKEN.RETROSUBSCRIBE` always answers `not_found`).
//!
//! ```text
//! cargo run -p kraken-protocol --example resp_mini_node -- 127.0.0.1:6400
//! redis-cli -p 6400 SUBSCRIBE news        # in one terminal
//! redis-cli -p 6400 PUBLISH news hello    # in another
//! ```
//!
//! Kraken's semantics shown here: a message is not delivered back to the
//! connection that published it (publisher exclusion), channel names are
//! checked by the codec, PSUBSCRIBE is refused.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use kraken_protocol::resp::{
    glob_match, ClientCommand, Protocol, Reply, RespCodec, RespCommand, RespLimits,
};
use tokio_util::codec::Decoder;

/// A connection as others see it: where to write pushes, in which protocol.
struct Peer {
    stream: Mutex<TcpStream>,
    protocol: Mutex<Protocol>,
}

#[derive(Default)]
struct Table {
    /// Channel -> subscribed connection ids, in subscription order.
    channels: HashMap<Bytes, Vec<i64>>,
    peers: HashMap<i64, Arc<Peer>>,
}

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:6400".into());
    let listener = TcpListener::bind(&addr).expect("bind");
    eprintln!(
        "resp_mini_node listening on {}",
        listener.local_addr().unwrap()
    );
    let table = Arc::new(Mutex::new(Table::default()));
    let ids = Arc::new(AtomicI64::new(1));
    for stream in listener.incoming().flatten() {
        let table = table.clone();
        let id = ids.fetch_add(1, Ordering::Relaxed);
        std::thread::spawn(move || connection(id, stream, table));
    }
}

struct Conn {
    id: i64,
    peer: Arc<Peer>,
    codec: RespCodec,
    subscribed: Vec<Bytes>,
    name: Option<Bytes>,
    /// Set by KRAKEN.REGISTER, used by the next SUBSCRIBE.
    horizon: Option<i64>,
    table: Arc<Mutex<Table>>,
}

fn connection(id: i64, stream: TcpStream, table: Arc<Mutex<Table>>) {
    let _ = stream.set_nodelay(true);
    let mut reader = stream.try_clone().expect("clone");
    let peer = Arc::new(Peer {
        stream: Mutex::new(stream),
        protocol: Mutex::new(Protocol::Resp2),
    });
    table.lock().unwrap().peers.insert(id, peer.clone());
    let mut conn = Conn {
        id,
        peer,
        codec: RespCodec::new(RespLimits::default()),
        subscribed: Vec::new(),
        name: None,
        horizon: None,
        table,
    };
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut chunk = [0u8; 16 * 1024];
    'read: loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        while let Some(command) = conn.codec.decode(&mut buf).expect("decode never fails") {
            let mut out = BytesMut::new();
            let close = conn.handle(command, &mut out);
            if conn.peer.stream.lock().unwrap().write_all(&out).is_err() || close {
                break 'read;
            }
        }
    }
    conn.unsubscribe_all();
    conn.table.lock().unwrap().peers.remove(&id);
}

impl Conn {
    fn reply(&self, reply: Reply, out: &mut BytesMut) {
        reply.encode(self.codec.protocol(), out);
    }

    fn subscribe(&mut self, channel: Bytes, out: &mut BytesMut) {
        if !self.subscribed.contains(&channel) {
            self.subscribed.push(channel.clone());
            let mut table = self.table.lock().unwrap();
            table
                .channels
                .entry(channel.clone())
                .or_default()
                .push(self.id);
        }
        self.reply(Reply::subscribed(channel, self.subscribed.len()), out);
    }

    fn unsubscribe(&mut self, channel: &Bytes) {
        self.subscribed.retain(|c| c != channel);
        let mut table = self.table.lock().unwrap();
        if let Some(ids) = table.channels.get_mut(channel) {
            ids.retain(|&i| i != self.id);
            if ids.is_empty() {
                table.channels.remove(channel);
            }
        }
    }

    fn unsubscribe_all(&mut self) {
        for channel in self.subscribed.clone() {
            self.unsubscribe(&channel);
        }
    }

    /// Delivers to every subscriber but the publisher; returns how many.
    fn publish(&self, channel: &Bytes, message: Bytes) -> i64 {
        let peers: Vec<Arc<Peer>> = {
            let table = self.table.lock().unwrap();
            let ids = table.channels.get(channel).map(|v| &v[..]).unwrap_or(&[]);
            ids.iter()
                .filter(|&&i| i != self.id)
                .filter_map(|i| table.peers.get(i).cloned())
                .collect()
        };
        for peer in &peers {
            let protocol = *peer.protocol.lock().unwrap();
            let bytes = Reply::message(protocol, channel, message.clone()).to_bytes(protocol);
            let _ = peer.stream.lock().unwrap().write_all(&bytes);
        }
        peers.len() as i64
    }

    fn set_protocol(&mut self, protocol: Protocol) {
        self.codec.set_protocol(protocol);
        *self.peer.protocol.lock().unwrap() = protocol;
    }

    /// Handles one command, writing its answer to `out`; true to close.
    fn handle(&mut self, command: RespCommand, out: &mut BytesMut) -> bool {
        let protocol = self.codec.protocol();
        let subscribed = !self.subscribed.is_empty();
        if protocol == Protocol::Resp2
            && subscribed
            && !command.allowed_in_resp2_subscribed_context()
        {
            let name = command.name().expect("commands with a reply are allowed");
            self.reply(Reply::not_in_subscribed_context(name), out);
            return false;
        }
        match command {
            RespCommand::Subscribe(channels) => {
                for channel in channels {
                    self.subscribe(channel, out);
                }
                // The first SUBSCRIBE after KRAKEN.REGISTER uses its horizon
                // (no history here: nothing to replay, nothing provable).
                if let Some(horizon) = self.horizon.take() {
                    self.reply(Reply::retro_result(horizon, false), out);
                }
            }
            RespCommand::Unsubscribe(channels) => {
                let channels = if channels.is_empty() {
                    self.subscribed.clone()
                } else {
                    channels
                };
                if channels.is_empty() {
                    self.reply(Reply::unsubscribed(None, 0), out);
                }
                for channel in channels {
                    self.unsubscribe(&channel);
                    self.reply(
                        Reply::unsubscribed(Some(channel), self.subscribed.len()),
                        out,
                    );
                }
            }
            RespCommand::PSubscribe(_) => self.reply(Reply::psubscribe_refused(), out),
            RespCommand::PUnsubscribe(_) => {
                self.reply(Reply::punsubscribed(None, self.subscribed.len()), out)
            }
            RespCommand::Publish { channel, message } => {
                let n = self.publish(&channel, message);
                self.reply(Reply::Integer(n), out);
            }
            RespCommand::Ping(message) => {
                self.reply(Reply::pong(protocol, subscribed, message), out)
            }
            RespCommand::Quit => {
                self.reply(Reply::ok(), out);
                return true;
            }
            RespCommand::Reset => {
                self.unsubscribe_all();
                self.name = None;
                self.horizon = None;
                self.set_protocol(Protocol::Resp2);
                self.reply(Reply::reset(), out);
            }
            RespCommand::Hello(hello) => {
                if let Some((user, _)) = &hello.auth {
                    if user != "default" {
                        self.reply(Reply::wrong_pass(), out);
                        return false;
                    }
                }
                if let Some(name) = hello.setname {
                    self.name = (!name.is_empty()).then_some(name);
                }
                if let Some(p) = hello.protocol {
                    self.set_protocol(p);
                }
                let p = self.codec.protocol();
                self.reply(
                    Reply::hello(p, self.id, "kraken", env!("CARGO_PKG_VERSION")),
                    out,
                );
            }
            RespCommand::Client(ClientCommand::SetName(name)) => {
                self.name = (!name.is_empty()).then_some(name);
                self.reply(Reply::ok(), out);
            }
            RespCommand::Client(ClientCommand::GetName) => {
                self.reply(Reply::bulk_or_null(self.name.clone()), out)
            }
            RespCommand::Client(ClientCommand::Id) => self.reply(Reply::Integer(self.id), out),
            RespCommand::Client(ClientCommand::SetInfo { .. }) => self.reply(Reply::ok(), out),
            RespCommand::Command(args) => {
                let count = args
                    .first()
                    .is_some_and(|a| a.eq_ignore_ascii_case(b"COUNT"));
                self.reply(
                    if count {
                        Reply::Integer(0)
                    } else {
                        Reply::Array(Vec::new())
                    },
                    out,
                )
            }
            RespCommand::Info(_) => self.reply(
                Reply::Verbatim(Bytes::from_static(b"# Server\r\nkraken_mini_node:1\r\n")),
                out,
            ),
            RespCommand::PubsubChannels(pattern) => {
                let table = self.table.lock().unwrap();
                let list = table
                    .channels
                    .keys()
                    .filter(|c| pattern.as_ref().is_none_or(|p| glob_match(p, c)))
                    .map(|c| Reply::Bulk(c.clone()))
                    .collect();
                drop(table);
                self.reply(Reply::Array(list), out);
            }
            RespCommand::PubsubNumsub(channels) => {
                let table = self.table.lock().unwrap();
                let mut list = Vec::new();
                for channel in channels {
                    let n = table.channels.get(&channel).map_or(0, |v| v.len());
                    list.push(Reply::Bulk(channel));
                    list.push(Reply::Integer(n as i64));
                }
                drop(table);
                self.reply(Reply::Array(list), out);
            }
            RespCommand::PubsubNumpat => self.reply(Reply::Integer(0), out),
            RespCommand::KrakenRegister { horizon_secs } => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                let horizon = horizon_secs.unwrap_or(now);
                self.horizon = Some(horizon);
                self.reply(Reply::registered(horizon), out);
            }
            RespCommand::KrakenRetroSubscribe {
                horizon_secs,
                channels,
            } => {
                for channel in channels {
                    self.subscribe(channel, out);
                }
                // No history here: the client cannot be told it missed nothing.
                self.reply(Reply::retro_result(horizon_secs, false), out);
            }
            RespCommand::Unknown { reply, .. } | RespCommand::Refused(reply) => {
                self.reply(reply, out)
            }
            RespCommand::ProtocolError(reply) => {
                self.reply(reply, out);
                return true;
            }
        }
        false
    }
}
