//! Byte-exact vectors recorded from a real Redis 7.0.15 (Debian's
//! `redis-server`, fresh, one connection per vector; `3:` vectors first sent
//! `HELLO 3`). Each input goes through the decoder (whole and in small
//! pieces) and a minimal single-connection node built from the codec's
//! replies, which must write exactly what Redis wrote, and close when Redis
//! closed.
//!
//! The minimal node knows only its own connection (PUBLISH reaches no one,
//! `PUBSUB` sees only its own subscriptions), which is all these vectors
//! need. Connection ids in HELLO replies are normalised to 7; `server` and
//! `version` are Redis's own.

mod resp_common;

use bytes::{Bytes, BytesMut};
use kraken_protocol::resp::{
    glob_match, ClientCommand, Protocol, Reply, RespCodec, RespCommand, RespLimits,
};
use resp_common::*;
use tokio_util::codec::{Decoder, Encoder};

/// One connection of a minimal Redis-like node.
struct MiniNode {
    codec: RespCodec,
    channels: Vec<Bytes>,
    name: Option<Bytes>,
}

impl MiniNode {
    fn new() -> Self {
        MiniNode {
            codec: RespCodec::new(RespLimits::default()),
            channels: Vec::new(),
            name: None,
        }
    }

    /// Runs `input`, returns what was written and whether the connection
    /// closed.
    fn run(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut buf = BytesMut::from(input);
        let mut out = BytesMut::new();
        while let Some(command) = self.codec.decode(&mut buf).unwrap() {
            if self.handle(command, &mut out) {
                return (out.to_vec(), true);
            }
        }
        (out.to_vec(), false)
    }

    fn send(&mut self, reply: Reply, out: &mut BytesMut) {
        self.codec.encode(reply, out).unwrap();
    }

    /// Handles one command; true when the connection closes.
    fn handle(&mut self, command: RespCommand, out: &mut BytesMut) -> bool {
        let protocol = self.codec.protocol();
        let subscribed = !self.channels.is_empty();
        if protocol == Protocol::Resp2
            && subscribed
            && !command.allowed_in_resp2_subscribed_context()
        {
            let name = command.name().unwrap();
            self.send(Reply::not_in_subscribed_context(name), out);
            return false;
        }
        match command {
            RespCommand::Subscribe(channels) => {
                for channel in channels {
                    if !self.channels.contains(&channel) {
                        self.channels.push(channel.clone());
                    }
                    let count = self.channels.len();
                    self.send(Reply::subscribed(channel, count), out);
                }
            }
            RespCommand::Unsubscribe(channels) if channels.is_empty() => {
                if self.channels.is_empty() {
                    self.send(Reply::unsubscribed(None, 0), out);
                }
                let all = std::mem::take(&mut self.channels);
                for (i, channel) in all.iter().enumerate() {
                    let left = all.len() - i - 1;
                    self.send(Reply::unsubscribed(Some(channel.clone()), left), out);
                }
            }
            RespCommand::Unsubscribe(channels) => {
                for channel in channels {
                    self.channels.retain(|c| *c != channel);
                    let count = self.channels.len();
                    self.send(Reply::unsubscribed(Some(channel), count), out);
                }
            }
            RespCommand::PSubscribe(_) => self.send(Reply::psubscribe_refused(), out),
            RespCommand::PUnsubscribe(_) => {
                let count = self.channels.len();
                self.send(Reply::punsubscribed(None, count), out);
            }
            RespCommand::Publish { .. } => self.send(Reply::Integer(0), out),
            RespCommand::Ping(message) => {
                self.send(Reply::pong(protocol, subscribed, message), out)
            }
            RespCommand::Quit => {
                self.send(Reply::ok(), out);
                return true;
            }
            RespCommand::Reset => {
                self.channels.clear();
                self.name = None;
                self.codec.set_protocol(Protocol::Resp2);
                self.send(Reply::reset(), out);
            }
            RespCommand::Hello(hello) => {
                if let Some((user, _)) = &hello.auth {
                    if user != "default" {
                        self.send(Reply::wrong_pass(), out);
                        return false;
                    }
                }
                if let Some(name) = hello.setname {
                    self.name = (!name.is_empty()).then_some(name);
                }
                if let Some(p) = hello.protocol {
                    self.codec.set_protocol(p);
                }
                let p = self.codec.protocol();
                self.send(Reply::hello(p, 7, "redis", "7.0.15"), out);
            }
            RespCommand::Client(ClientCommand::SetName(name)) => {
                self.name = (!name.is_empty()).then_some(name);
                self.send(Reply::ok(), out);
            }
            RespCommand::Client(ClientCommand::GetName) => {
                let name = self.name.clone();
                self.send(Reply::bulk_or_null(name), out);
            }
            RespCommand::Client(ClientCommand::Id) => self.send(Reply::Integer(48), out),
            RespCommand::Client(ClientCommand::SetInfo { .. }) => self.send(Reply::ok(), out),
            RespCommand::Command(_) => self.send(Reply::Array(Vec::new()), out),
            RespCommand::Info(_) => self.send(Reply::Verbatim(Bytes::new()), out),
            RespCommand::PubsubChannels(pattern) => {
                let list = self
                    .channels
                    .iter()
                    .filter(|c| pattern.as_ref().is_none_or(|p| glob_match(p, c)))
                    .map(|c| Reply::Bulk(c.clone()))
                    .collect();
                self.send(Reply::Array(list), out);
            }
            RespCommand::PubsubNumsub(channels) => {
                let mut list = Vec::new();
                for channel in channels {
                    let n = self.channels.contains(&channel) as i64;
                    list.push(Reply::Bulk(channel));
                    list.push(Reply::Integer(n));
                }
                self.send(Reply::Array(list), out);
            }
            RespCommand::PubsubNumpat => self.send(Reply::Integer(0), out),
            RespCommand::KrakenRegister { horizon_secs } => self.send(
                Reply::registered(horizon_secs.unwrap_or(1_700_000_000)),
                out,
            ),
            RespCommand::KrakenRetroSubscribe {
                horizon_secs,
                channels,
            } => {
                for channel in channels {
                    if !self.channels.contains(&channel) {
                        self.channels.push(channel.clone());
                    }
                    let count = self.channels.len();
                    self.send(Reply::subscribed(channel, count), out);
                }
                self.send(Reply::retro_result(horizon_secs, true), out);
            }
            RespCommand::Unknown { reply, .. } | RespCommand::Refused(reply) => {
                self.send(reply, out)
            }
            RespCommand::ProtocolError(reply) => {
                self.send(reply, out);
                return true;
            }
        }
        false
    }
}

/// Runs `input` on a fresh connection (after `HELLO 3` if `resp3`) and
/// checks the output and the close against Redis's; also decodes the input
/// in small pieces, which must not change the commands.
fn redis(resp3: bool, input: &[u8], expected: &[u8], closed: bool) {
    let mut node = MiniNode::new();
    if resp3 {
        node.run(b"HELLO 3\r\n");
    }
    d(input);
    let (out, did_close) = node.run(input);
    assert_eq!(
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(expected),
        "input {:?}",
        String::from_utf8_lossy(input)
    );
    assert_eq!(out, expected);
    assert_eq!(
        did_close,
        closed,
        "close after {:?}",
        String::from_utf8_lossy(input)
    );
}

fn r2(input: &[u8], expected: &[u8]) {
    redis(false, input, expected, false);
}

fn r3(input: &[u8], expected: &[u8]) {
    redis(true, input, expected, false);
}

fn r2_close(input: &[u8], expected: &[u8]) {
    redis(false, input, expected, true);
}

// ---- SUBSCRIBE / UNSUBSCRIBE -------------------------------------------------

#[test]
fn subscribe() {
    r2(
        b"SUBSCRIBE a b\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n",
    );
    r3(
        b"SUBSCRIBE a b\r\n",
        b">3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n>3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n",
    );
    r2(
        b"subscribe a\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n",
    );
    r2(
        b"SUBSCRIBE a a\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n",
    );
    r2(
        b"SUBSCRIBE\r\n",
        b"-ERR wrong number of arguments for 'subscribe' command\r\n",
    );
    r2(
        b"Subscribe\r\n",
        b"-ERR wrong number of arguments for 'subscribe' command\r\n",
    );
}

#[test]
fn unsubscribe() {
    r2(
        b"UNSUBSCRIBE\r\n",
        b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n",
    );
    r3(
        b"UNSUBSCRIBE\r\n",
        b">3\r\n$11\r\nunsubscribe\r\n_\r\n:0\r\n",
    );
    r2(
        b"SUBSCRIBE a b\r\nUNSUBSCRIBE\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n\
*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:0\r\n",
    );
    r2(
        b"SUBSCRIBE a\r\nUNSUBSCRIBE x a\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$11\r\nunsubscribe\r\n$1\r\nx\r\n:1\r\n\
*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n",
    );
    r3(
        b"SUBSCRIBE a\r\nUNSUBSCRIBE x a\r\n",
        b">3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n>3\r\n$11\r\nunsubscribe\r\n$1\r\nx\r\n:1\r\n\
>3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n",
    );
    r2(
        b"UNSUBSCRIBE a a\r\n",
        b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n",
    );
}

#[test]
fn punsubscribe_without_patterns() {
    r2(
        b"PUNSUBSCRIBE\r\n",
        b"*3\r\n$12\r\npunsubscribe\r\n$-1\r\n:0\r\n",
    );
    r2(
        b"subscribe a\r\nPUNSUBSCRIBE\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$12\r\npunsubscribe\r\n$-1\r\n:1\r\n",
    );
}

// ---- PUBLISH -----------------------------------------------------------------

#[test]
fn publish() {
    r2(b"PUBLISH a hi\r\n", b":0\r\n");
    r2(
        b"PUBLISH a\r\n",
        b"-ERR wrong number of arguments for 'publish' command\r\n",
    );
    r2(
        b"SUBSCRIBE a\r\nPUBLISH a x\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n-ERR Can't execute 'publish': only \
(P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n",
    );
}

// ---- PING / QUIT / RESET -------------------------------------------------------

#[test]
fn ping() {
    r2(b"PING\r\n", b"+PONG\r\n");
    r2(b"PING hello\r\n", b"$5\r\nhello\r\n");
    r2(b"PING \"\"\r\n", b"$0\r\n\r\n");
    r2(
        b"PING a b\r\n",
        b"-ERR wrong number of arguments for 'ping' command\r\n",
    );
    r3(b"PING\r\n", b"+PONG\r\n");
    r2(
        b"SUBSCRIBE a\r\nPING\r\nPING hi\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*2\r\n$4\r\npong\r\n$0\r\n\r\n\
*2\r\n$4\r\npong\r\n$2\r\nhi\r\n",
    );
    r3(
        b"SUBSCRIBE a\r\nPING\r\nPING hi\r\n",
        b">3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n+PONG\r\n$2\r\nhi\r\n",
    );
}

#[test]
fn quit_answers_ok_and_closes() {
    r2_close(b"QUIT\r\nPING\r\n", b"+OK\r\n");
    r2_close(b"QUIT x\r\n", b"+OK\r\n");
    redis(true, b"QUIT\r\n", b"+OK\r\n", true);
    r2_close(
        b"subscribe a\r\nQUIT\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n+OK\r\n",
    );
}

#[test]
fn reset() {
    r2(b"RESET\r\n", b"+RESET\r\n");
    r3(b"RESET\r\n", b"+RESET\r\n");
    r2(
        b"RESET x\r\n",
        b"-ERR wrong number of arguments for 'reset' command\r\n",
    );
    r2(
        b"SUBSCRIBE a\r\nRESET\r\nPING\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n+RESET\r\n+PONG\r\n",
    );
    r2(
        b"SUBSCRIBE a\r\nRESET\r\nUNSUBSCRIBE\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n+RESET\r\n*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n",
    );
    // RESET goes back to RESP2: a null is `$-1` again.
    r2(
        b"HELLO 3\r\nRESET\r\nCLIENT GETNAME\r\n",
        &[hello_map(b'%', 3), &b"+RESET\r\n$-1\r\n"[..]].concat(),
    );
}

// ---- HELLO -------------------------------------------------------------------

/// Redis's HELLO reply with the id normalised to 7.
fn hello_map(marker: u8, proto: u8) -> &'static [u8] {
    match (marker, proto) {
        (b'*', 2) => b"*14\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$6\r\n7.0.15\r\n$5\r\nproto\r\n:2\r\n$2\r\nid\r\n:7\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n",
        (b'%', 3) => b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$6\r\n7.0.15\r\n$5\r\nproto\r\n:3\r\n$2\r\nid\r\n:7\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n",
        _ => unreachable!(),
    }
}

#[test]
fn hello() {
    r2(b"HELLO\r\n", hello_map(b'*', 2));
    r2(b"HELLO 2\r\n", hello_map(b'*', 2));
    r2(b"HELLO 3\r\n", hello_map(b'%', 3));
    r2(b"HELLO 3 AUTH default x\r\n", hello_map(b'%', 3));
    r2(
        b"HELLO 2 AUTH default x AUTH default y\r\n",
        hello_map(b'*', 2),
    );
    r2(
        b"HELLO 3 SETNAME myname\r\nCLIENT GETNAME\r\n",
        &[hello_map(b'%', 3), &b"$6\r\nmyname\r\n"[..]].concat(),
    );
    r2(
        b"HELLO 3 SETNAME x SETNAME y\r\nCLIENT GETNAME\r\n",
        &[hello_map(b'%', 3), &b"$1\r\ny\r\n"[..]].concat(),
    );
    r2(b"HELLO 4\r\n", b"-NOPROTO unsupported protocol version\r\n");
    r2(b"HELLO 1\r\n", b"-NOPROTO unsupported protocol version\r\n");
    r2(
        b"HELLO -1\r\n",
        b"-NOPROTO unsupported protocol version\r\n",
    );
    r2(
        b"HELLO abc\r\n",
        b"-ERR Protocol version is not an integer or out of range\r\n",
    );
    r2(
        b"HELLO 03\r\n",
        b"-ERR Protocol version is not an integer or out of range\r\n",
    );
    r2(
        b"HELLO 3 AUTH foo bar\r\n",
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    );
    r2(
        b"HELLO 3 SETNAME\r\n",
        b"-ERR Syntax error in HELLO option 'SETNAME'\r\n",
    );
    r2(
        b"*3\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$7\r\nSETNAME\r\n",
        b"-ERR Syntax error in HELLO option 'SETNAME'\r\n",
    );
    r2(
        b"HELLO 3 FOO\r\n",
        b"-ERR Syntax error in HELLO option 'FOO'\r\n",
    );
    r2(
        b"HELLO 3 AUTH x\r\n",
        b"-ERR Syntax error in HELLO option 'AUTH'\r\n",
    );
    r2(
        b"HELLO 3 AUTH foo\r\n",
        b"-ERR Syntax error in HELLO option 'AUTH'\r\n",
    );
    r2(
        b"HELLO 3 setname a\x01b\r\n",
        b"-ERR Client names cannot contain spaces, newlines or special characters.\r\n",
    );
    r2(
        b"SUBSCRIBE a\r\nHELLO 3\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n-ERR Can't execute 'hello': only \
(P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n",
    );
}

// ---- CLIENT ------------------------------------------------------------------

#[test]
fn client() {
    r2(
        b"CLIENT SETNAME n1\r\nCLIENT GETNAME\r\n",
        b"+OK\r\n$2\r\nn1\r\n",
    );
    r2(b"CLIENT GETNAME\r\n", b"$-1\r\n");
    r3(b"CLIENT GETNAME\r\n", b"_\r\n");
    r2(
        b"CLIENT SETNAME \"\"\r\nCLIENT GETNAME\r\n",
        b"+OK\r\n$-1\r\n",
    );
    r2(b"CLIENT ID\r\n", b":48\r\n");
    r2(
        b"CLIENT SETNAME a b\r\n",
        b"-ERR wrong number of arguments for 'client|setname' command\r\n",
    );
    r2(
        b"CLIENT SETNAME\r\n",
        b"-ERR wrong number of arguments for 'client|setname' command\r\n",
    );
    r2(
        b"CLIENT SETNAME \"a b\"\r\n",
        b"-ERR Client names cannot contain spaces, newlines or special characters.\r\n",
    );
    r2(
        b"Client GetName x\r\n",
        b"-ERR wrong number of arguments for 'client|getname' command\r\n",
    );
    r2(
        b"CLIENT ID x\r\n",
        b"-ERR wrong number of arguments for 'client|id' command\r\n",
    );
    r2(
        b"CLIENT FOO\r\n",
        b"-ERR unknown subcommand 'FOO'. Try CLIENT HELP.\r\n",
    );
    r2(
        b"CLIENT\r\n",
        b"-ERR wrong number of arguments for 'client' command\r\n",
    );
    r2(
        b"SUBSCRIBE a\r\nCLIENT ID\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n-ERR Can't execute 'client|id': only \
(P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n",
    );
}

// ---- COMMAND / INFO / PUBSUB ---------------------------------------------------

#[test]
fn info_of_an_unknown_section_is_empty() {
    r2(b"INFO nosuch\r\n", b"$0\r\n\r\n");
    r3(b"INFO nosuch\r\n", b"=4\r\ntxt:\r\n");
    r2(
        b"SUBSCRIBE a\r\nINFO\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n-ERR Can't execute 'info': only \
(P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n",
    );
}

#[test]
fn command_docs_of_nothing() {
    r2(b"COMMAND DOCS nosuch\r\n", b"*0\r\n");
}

#[test]
fn pubsub() {
    r2(b"PUBSUB CHANNELS\r\n", b"*0\r\n");
    r3(
        b"SUBSCRIBE a b\r\nPUBSUB CHANNELS\r\n",
        b">3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n>3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n\
*2\r\n$1\r\na\r\n$1\r\nb\r\n",
    );
    r3(
        b"SUBSCRIBE a b\r\nPUBSUB CHANNELS a*\r\n",
        b">3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n>3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n\
*1\r\n$1\r\na\r\n",
    );
    r2(
        b"PUBSUB NUMSUB a zz\r\n",
        b"*4\r\n$1\r\na\r\n:0\r\n$2\r\nzz\r\n:0\r\n",
    );
    r3(
        b"PUBSUB NUMSUB a zz\r\n",
        b"*4\r\n$1\r\na\r\n:0\r\n$2\r\nzz\r\n:0\r\n",
    );
    r2(b"PUBSUB NUMSUB\r\n", b"*0\r\n");
    r2(b"PUBSUB NUMPAT\r\n", b":0\r\n");
    r2(
        b"PUBSUB NUMPAT x\r\n",
        b"-ERR wrong number of arguments for 'pubsub|numpat' command\r\n",
    );
    r2(
        b"PUBSUB FOO\r\n",
        b"-ERR unknown subcommand 'FOO'. Try PUBSUB HELP.\r\n",
    );
    r2(
        b"PUBSUB\r\n",
        b"-ERR wrong number of arguments for 'pubsub' command\r\n",
    );
    r2(
        b"PUBSUB CHANNELS a b\r\n",
        b"-ERR unknown subcommand or wrong number of arguments for 'CHANNELS'. Try PUBSUB HELP.\r\n",
    );
}

// ---- Unknown commands ----------------------------------------------------------

#[test]
fn unknown_commands_as_redis_7_words_them() {
    r2(
        b"FOO\r\n",
        b"-ERR unknown command 'FOO', with args beginning with: \r\n",
    );
    r2(
        b"FOO a b c\r\n",
        b"-ERR unknown command 'FOO', with args beginning with: 'a' 'b' 'c' \r\n",
    );
    r2(
        b"foo bar\r\n",
        b"-ERR unknown command 'foo', with args beginning with: 'bar' \r\n",
    );
    r2(
        b"*2\r\n$3\r\nFOO\r\n$3\r\na\x00b\r\n",
        b"-ERR unknown command 'FOO', with args beginning with: 'a' \r\n",
    );
    r2(
        b"*1\r\n$0\r\n\r\n",
        b"-ERR unknown command '', with args beginning with: \r\n",
    );
    r2(
        b"FOO a\tb\r\n",
        b"-ERR unknown command 'FOO', with args beginning with: 'a' 'b' \r\n",
    );
    r2(
        b"FOO \xc3\xa9\r\n",
        b"-ERR unknown command 'FOO', with args beginning with: '\xc3\xa9' \r\n",
    );
    // CR and LF in an echoed argument become spaces.
    r2(
        b"*2\r\n$3\r\nFOO\r\n$3\r\na\r\n\r\n",
        b"-ERR unknown command 'FOO', with args beginning with: 'a  ' \r\n",
    );
    r2(
        b"PING\x0c\r\n",
        b"-ERR unknown command 'PING\x0c', with args beginning with: \r\n",
    );
    // Not a command in subscribed mode either: the unknown error wins.
    r2(
        b"SUBSCRIBE a\r\nFOO\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n-ERR unknown command 'FOO', with args beginning with: \r\n",
    );
}

#[test]
fn unknown_command_echo_is_cut_at_128_bytes() {
    let x200 = "x".repeat(200);
    r2(
        format!("FOO {x200} y\r\n").as_bytes(),
        format!(
            "-ERR unknown command 'FOO', with args beginning with: '{}' \r\n",
            "x".repeat(128)
        )
        .as_bytes(),
    );
    r2(
        format!("FOO {} {} c\r\n", "a".repeat(100), "b".repeat(40)).as_bytes(),
        format!(
            "-ERR unknown command 'FOO', with args beginning with: '{}' '{}' \r\n",
            "a".repeat(100),
            "b".repeat(25)
        )
        .as_bytes(),
    );
    r2(
        format!("FOO {} bb c\r\n", "a".repeat(126)).as_bytes(),
        format!(
            "-ERR unknown command 'FOO', with args beginning with: '{}' \r\n",
            "a".repeat(126)
        )
        .as_bytes(),
    );
    r2(
        format!("{}\r\n", "F".repeat(200)).as_bytes(),
        format!(
            "-ERR unknown command '{}', with args beginning with: \r\n",
            "F".repeat(128)
        )
        .as_bytes(),
    );
}

// ---- Framing -------------------------------------------------------------------

#[test]
fn empty_commands_get_no_answer() {
    r2(b"\r\n", b"");
    r2(b"\r\nPING\r\n", b"+PONG\r\n");
    r2(b"*0\r\nPING\r\n", b"+PONG\r\n");
    r2(b"*-1\r\nPING\r\n", b"+PONG\r\n");
    r2(b"*-2\r\nPING\r\n", b"+PONG\r\n");
    r2(b"\x00PING\r\n", b"");
}

#[test]
fn arrays_and_inline_lines() {
    r2(b"*1\r\n$4\r\nPING\r\n", b"+PONG\r\n");
    r3(b"*1\r\n$4\r\nPING\r\n", b"+PONG\r\n");
    r2(b"*2\r\n$4\r\nPING\r\n$2\r\nhi\r\n", b"$2\r\nhi\r\n");
    r2(b"*2\r\n$4\r\nPING\r\n$3\r\na\x00b\r\n", b"$3\r\na\x00b\r\n");
    r2(b"*1\r\n$4\r\nPING\r\n*1\r\n", b"+PONG\r\n");
    r2(b"*1\r\n", b"");
    r2(b"*1\r\n$4\r\nPI", b"");
    r2(b"PING\n", b"+PONG\r\n");
    r2(b" PING \r\n", b"+PONG\r\n");
    r2(b"PING\r\r\n", b"+PONG\r\n");
    r2(b"PING \"a b\"\r\n", b"$3\r\na b\r\n");
    r2(b"PING \"\\x41\\n\"\r\n", b"$2\r\nA\n\r\n");
    r2(b"PING \"\\q\\\"x\"\r\n", b"$3\r\nq\"x\r\n");
    r2(b"PING \x0bx\r\n", b"$1\r\nx\r\n");
    r2(
        b"PING 'a\\'b' \"c\\x4\"\r\n",
        b"-ERR wrong number of arguments for 'ping' command\r\n",
    );
    r2(
        b"PING \"a\"\tb\r\n",
        b"-ERR wrong number of arguments for 'ping' command\r\n",
    );
}

#[test]
fn protocol_errors_answer_then_close() {
    let cases: &[(&[u8], &[u8])] = &[
        (b"*abc\r\n", b"invalid multibulk length"),
        (b"*3000000000\r\n", b"invalid multibulk length"),
        (b"*+1\r\n$4\r\nPING\r\n", b"invalid multibulk length"),
        (b"*01\r\n$04\r\nPING\r\n", b"invalid multibulk length"),
        (b"*-0\r\nPING\r\n", b"invalid multibulk length"),
        (b"*\r\nPING\r\n", b"invalid multibulk length"),
        (b"*1 \r\n$4\r\nPING\r\n", b"invalid multibulk length"),
        (b"*1\n$4\r\nPING\r\n", b"invalid multibulk length"),
        (b"*1\r\nabc\r\n", b"expected '$', got 'a'"),
        (b"*1\r\n$abc\r\n", b"invalid bulk length"),
        (b"*1\r\n$-1\r\n", b"invalid bulk length"),
        (b"*1\r\n$-0\r\n", b"invalid bulk length"),
        (b"*1\r\n$999999999999\r\n", b"invalid bulk length"),
        (b"*1\r\n$+4\r\nPING\r\n", b"invalid bulk length"),
        (b"*1\r\n$\r\n", b"invalid bulk length"),
        (b"*1\r\n$00\r\n\r\n", b"invalid bulk length"),
        (b"*1\r\n$4\nPING\r\n", b"invalid bulk length"),
        (b"PING \"a\r\n", b"unbalanced quotes in request"),
        (b"PING 'x\r\n", b"unbalanced quotes in request"),
        (b"PING a\"b\r\n", b"unbalanced quotes in request"),
        (b"PING \"a\"b\r\n", b"unbalanced quotes in request"),
    ];
    for (input, why) in cases {
        let expected = [&b"-ERR Protocol error: "[..], why, b"\r\n"].concat();
        r2_close(input, &expected);
    }
}

#[test]
fn oversized_headers_and_lines_as_redis_words_them() {
    let mut line = b"PING ".to_vec();
    line.resize(70_000, b'x');
    r2_close(&line, b"-ERR Protocol error: too big inline request\r\n");
    let mut count = b"*".to_vec();
    count.resize(300, b'1');
    r2_close(
        &count,
        b"-ERR Protocol error: too big mbulk count string\r\n",
    );
    let mut len = b"*1\r\n$".to_vec();
    len.resize(300, b'1');
    r2_close(&len, b"-ERR Protocol error: too big bulk count string\r\n");
}

// ---- RESP3 after HELLO 3 ---------------------------------------------------------

#[test]
fn resp3_spellings() {
    r3(
        b"PUNSUBSCRIBE\r\n",
        b">3\r\n$12\r\npunsubscribe\r\n_\r\n:0\r\n",
    );
    r3(b"PUBLISH a hi\r\n", b":0\r\n");
    r3(b"PING hello\r\n", b"$5\r\nhello\r\n");
    r3(b"HELLO 2\r\n", hello_map(b'*', 2));
    r3(
        b"CLIENT ID x\r\n",
        b"-ERR wrong number of arguments for 'client|id' command\r\n",
    );
    r3(
        b"FOO a\r\n",
        b"-ERR unknown command 'FOO', with args beginning with: 'a' \r\n",
    );
    // Any command while subscribed in RESP3.
    r3(
        b"SUBSCRIBE a\r\nCLIENT GETNAME\r\nPUNSUBSCRIBE\r\n",
        b">3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n_\r\n>3\r\n$12\r\npunsubscribe\r\n_\r\n:1\r\n",
    );
    r3(
        b"SUBSCRIBE a\r\nUNSUBSCRIBE\r\nUNSUBSCRIBE\r\n",
        b">3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n>3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n\
>3\r\n$11\r\nunsubscribe\r\n_\r\n:0\r\n",
    );
    redis(
        true,
        b"*abc\r\n",
        b"-ERR Protocol error: invalid multibulk length\r\n",
        true,
    );
    r3(b"PUBSUB NUMPAT\r\n", b":0\r\n");
    r3(b"RESET\r\nCLIENT GETNAME\r\n", b"+RESET\r\n$-1\r\n");
}

/// The pushes a subscriber of `news` received from Redis when another
/// connection sent `PUBLISH news "x\r\ny"`.
#[test]
fn message_pushes_as_redis_sends_them() {
    let payload = Bytes::from_static(b"x\r\ny");
    assert_eq!(
        wire(
            &Reply::message(Protocol::Resp2, b"news", payload.clone()),
            Protocol::Resp2
        ),
        b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$4\r\nx\r\ny\r\n"
    );
    assert_eq!(
        wire(
            &Reply::message(Protocol::Resp3, b"news", payload),
            Protocol::Resp3
        ),
        b">3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$4\r\nx\r\ny\r\n"
    );
}

#[test]
fn echoed_options_and_subcommands_stop_at_a_nul() {
    r2(
        b"*3\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$5\r\nF\x00OOO\r\n",
        b"-ERR Syntax error in HELLO option 'F'\r\n",
    );
    r2(
        b"*2\r\n$6\r\nCLIENT\r\n$4\r\nF\x00OO\r\n",
        b"-ERR unknown subcommand 'F'. Try CLIENT HELP.\r\n",
    );
    r2(
        b"*3\r\n$6\r\nPUBSUB\r\n$9\r\nCHA\x00NNELS\r\n$1\r\na\r\n",
        b"-ERR unknown subcommand 'CHA'. Try PUBSUB HELP.\r\n",
    );
    r2(
        b"*4\r\n$6\r\nPUBSUB\r\n$8\r\nchannels\r\n$1\r\na\r\n$1\r\nb\r\n",
        b"-ERR unknown subcommand or wrong number of arguments for 'channels'. Try PUBSUB HELP.\r\n",
    );
}

// ---- Replies built directly ------------------------------------------------------

#[test]
fn message_pushes() {
    let m = Reply::message(Protocol::Resp2, b"news", Bytes::from_static(b"hi"));
    assert_eq!(
        wire(&m, Protocol::Resp2),
        b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n"
    );
    let m = Reply::message(Protocol::Resp3, b"news", Bytes::from_static(b"hi"));
    assert_eq!(
        wire(&m, Protocol::Resp3),
        b">3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n"
    );
    let m = Reply::message(Protocol::Resp2, b"a", Bytes::from_static(b"x\r\ny"));
    assert_eq!(
        wire(&m, Protocol::Resp2),
        b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$4\r\nx\r\ny\r\n"
    );
    let m = Reply::message(Protocol::Resp2, b"a", Bytes::new());
    assert_eq!(
        wire(&m, Protocol::Resp2),
        b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$0\r\n\r\n"
    );
}

#[test]
fn the_same_reply_in_both_protocols() {
    let null = Reply::Null;
    assert_eq!(wire(&null, Protocol::Resp2), b"$-1\r\n");
    assert_eq!(wire(&null, Protocol::Resp3), b"_\r\n");
    let map = Reply::Map(vec![(Reply::bulk_static("k"), Reply::Integer(-1))]);
    assert_eq!(wire(&map, Protocol::Resp2), b"*2\r\n$1\r\nk\r\n:-1\r\n");
    assert_eq!(wire(&map, Protocol::Resp3), b"%1\r\n$1\r\nk\r\n:-1\r\n");
    let v = Reply::Verbatim(Bytes::from_static(b"# Server\r\n"));
    assert_eq!(wire(&v, Protocol::Resp2), b"$10\r\n# Server\r\n\r\n");
    assert_eq!(wire(&v, Protocol::Resp3), b"=14\r\ntxt:# Server\r\n\r\n");
    assert_eq!(
        wire(&Reply::error("ERR a\r\nb"), Protocol::Resp2),
        b"-ERR a  b\r\n"
    );
    assert_eq!(
        wire(&Reply::Integer(i64::MIN), Protocol::Resp3),
        b":-9223372036854775808\r\n"
    );
}

#[test]
fn kraken_replies() {
    let retro = Reply::retro_result(1_700_000_000, true);
    assert_eq!(
        wire(&retro, Protocol::Resp2),
        b"*3\r\n$12\r\nkraken.retro\r\n$10\r\n1700000000\r\n$6\r\nstored\r\n"
    );
    let retro = Reply::retro_result(-5, false);
    assert_eq!(
        wire(&retro, Protocol::Resp3),
        b">3\r\n$12\r\nkraken.retro\r\n$2\r\n-5\r\n$9\r\nnot_found\r\n"
    );
    r2(
        b"KRAKEN.RETROSUBSCRIBE 1700000000 a b\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n\
*3\r\n$12\r\nkraken.retro\r\n$10\r\n1700000000\r\n$6\r\nstored\r\n",
    );
    // Arrays, not pushes, in both protocols.
    r2(
        b"kraken.register\r\n",
        b"*3\r\n$15\r\nkraken.register\r\n$10\r\n1700000000\r\n$2\r\nok\r\n",
    );
    r3(
        b"KRAKEN.REGISTER -12\r\n",
        b"*3\r\n$15\r\nkraken.register\r\n$3\r\n-12\r\n$2\r\nok\r\n",
    );
    r2(
        b"KRAKEN.REGISTER x\r\n",
        b"-ERR value is not an integer or out of range\r\n",
    );
    r2(
        b"KRAKEN.REGISTER 1 2\r\n",
        b"-ERR wrong number of arguments for 'kraken.register' command\r\n",
    );
    r2(
        b"KRAKEN.RETROSUBSCRIBE 17\r\n",
        b"-ERR wrong number of arguments for 'kraken.retrosubscribe' command\r\n",
    );
    r2(
        b"KRAKEN.RETROSUBSCRIBE soon a\r\n",
        b"-ERR value is not an integer or out of range\r\n",
    );
    r2(
        b"PSUBSCRIBE a*\r\n",
        b"-ERR PSUBSCRIBE is not supported: Kraken routes exact channel names only, \
subscribe to each channel by name\r\n",
    );
}

#[test]
fn kraken_checks_channel_names() {
    let bad = b"-ERR invalid channel name: Kraken channels are non-empty and contain no space, CR or LF\r\n";
    r2(b"SUBSCRIBE \"\"\r\n", bad);
    r2(b"SUBSCRIBE a \"b c\"\r\n", bad);
    r2(b"PUBLISH \"a\\r\\n\" x\r\n", bad);
    r2(b"KRAKEN.RETROSUBSCRIBE 0 \"a b\"\r\n", bad);
    let long = "c".repeat(1025);
    r2(
        format!("SUBSCRIBE {long}\r\n").as_bytes(),
        b"-ERR channel name too long: at most 1024 bytes\r\n",
    );
    // Unsubscribing is a lookup: any name is confirmed.
    r2(
        b"UNSUBSCRIBE \"a b\"\r\n",
        b"*3\r\n$11\r\nunsubscribe\r\n$3\r\na b\r\n:0\r\n",
    );
}

#[test]
fn decoded_commands() {
    assert_eq!(
        d(b"SUBSCRIBE a b\r\n"),
        [RespCommand::Subscribe(bs(&["a", "b"]))]
    );
    assert_eq!(
        d(b"*3\r\n$7\r\npublish\r\n$1\r\nc\r\n$4\r\nx\r\ny\r\n"),
        [RespCommand::Publish {
            channel: b("c"),
            message: b("x\r\ny"),
        }]
    );
    assert_eq!(
        d(b"KRAKEN.RETROSUBSCRIBE -9223372036854775808 t\r\n"),
        [RespCommand::KrakenRetroSubscribe {
            horizon_secs: i64::MIN,
            channels: bs(&["t"]),
        }]
    );
    assert_eq!(
        d(b"CLIENT SETINFO LIB-NAME redis-py\r\n"),
        [RespCommand::Client(ClientCommand::SetInfo {
            attribute: b("LIB-NAME"),
            value: b("redis-py"),
        })]
    );
    assert_eq!(
        d(b"COMMAND DOCS\r\n"),
        [RespCommand::Command(bs(&["DOCS"]))]
    );
    assert_eq!(d(b"INFO server\r\n"), [RespCommand::Info(bs(&["server"]))]);
    let [unknown] = &d(b"SSUBSCRIBE a\r\n")[..] else {
        panic!()
    };
    assert!(matches!(unknown, RespCommand::Unknown { name, .. } if name == "SSUBSCRIBE"));
    assert_eq!(
        wire(carried(unknown), Protocol::Resp2),
        b"-ERR unknown command 'SSUBSCRIBE', with args beginning with: 'a' \r\n"
    );
}
