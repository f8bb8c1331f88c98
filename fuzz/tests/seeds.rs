//! The committed seeds still pass every target (a regression suite without
//! AFL), and mean what their names say under each target's input layout, so
//! that a change to a layout cannot silently turn the seeds into noise.

use std::path::Path;

use bytes::Bytes;
use kraken_fuzz::decoder::{decode, Case, SMALL};
use kraken_fuzz::{bodies, decoder, roundtrip};
use kraken_protocol::{
    parse_publish_block, parse_retro_body, BodyLimits, Request, Response, SetKey,
};

fn seed(target: &str, name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target)
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn replay_all(target: &str, check: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        eprintln!("{}", path.display());
        check(&data);
        n += 1;
    }
    n
}

#[test]
fn every_seed_passes_its_target() {
    assert!(replay_all("decoder", decoder::check) >= 20);
    assert!(replay_all("bodies", bodies::check) >= 15);
    assert!(replay_all("roundtrip", roundtrip::check) >= 5);
}

fn small(name: &str) -> Vec<Request> {
    let data = seed("decoder", name);
    let case = Case::new(&data);
    decode(case.stream, SMALL, &case.sizes)
}

#[test]
fn decoder_seeds_mean_what_they_say() {
    let pipeline = small("pipeline-quit");
    assert_eq!(pipeline.len(), 6, "{pipeline:?}");
    assert!(matches!(
        pipeline[0],
        Request::Set {
            key: SetKey::Subscribe,
            noreply: true,
            ..
        }
    ));
    assert_eq!(pipeline[5], Request::Quit);

    let too_large = small("block-too-large");
    assert!(
        matches!(&too_large[..], [Request::Invalid(r), Request::GetMessages] if !r.close),
        "{too_large:?}"
    );
    let too_long = small("line-too-long");
    assert!(
        matches!(&too_long[..], [Request::Invalid(r)]
            if r.close && r.reply == Response::ClientError("line too long".into())),
        "{too_long:?}"
    );
    assert!(matches!(
        &small("publish-binary")[..],
        [
            Request::Set {
                key: SetKey::Publish,
                ..
            },
            Request::GetMessages
        ]
    ));
    assert!(matches!(
        &small("block-at-limit")[..],
        [
            Request::Set {
                key: SetKey::Publish,
                ..
            },
            Request::Quit
        ]
    ));
    let data = seed("decoder", "line-64-cr-split");
    let case = Case::new(&data);
    assert_eq!(case.sizes, [65, 1]);
    assert_eq!(decode(case.stream, SMALL, &case.sizes), [Request::Stats]);
}

#[test]
fn body_seeds_mean_what_they_say() {
    let data = seed("bodies", "publish-binary");
    let block = Bytes::copy_from_slice(&data[1..]);
    let entries = parse_publish_block(&block, &BodyLimits::UNLIMITED).unwrap();
    assert_eq!(entries.len(), 1);
    assert!(entries[0].payload.windows(3).any(|w| w == b"END"));

    let data = seed("bodies", "retro-negative");
    let body = parse_retro_body(&Bytes::copy_from_slice(&data[1..]), 8).unwrap();
    assert_eq!(body.horizon_secs, i64::MIN);
}

#[test]
fn roundtrip_seeds_mean_what_they_say() {
    let entries = roundtrip::entries(&seed("roundtrip", "binary"));
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[1].1, b"");
    let entries = roundtrip::entries(&seed("roundtrip", "separators"));
    assert_eq!(entries[0].0, [b"a`b".to_vec(), b"MJ".to_vec()]);
}

#[test]
fn resp_seeds_pass_and_mean_what_they_say() {
    use kraken_fuzz::resp;
    use kraken_protocol::resp::RespCommand;
    assert!(replay_all("resp", resp::check) >= 20);
    let small = |name: &str| {
        let data = seed("resp", name);
        let case = resp::Case::new(&data);
        resp::decode(case.stream, resp::SMALL, &case.sizes)
    };
    let pipeline = small("pipeline-quit");
    assert_eq!(pipeline.len(), 5, "{pipeline:?}");
    assert_eq!(pipeline[4], RespCommand::Quit);
    assert!(matches!(&small("bulk-at-limit")[..], [RespCommand::Ping(Some(m))] if m.len() == 48));
    assert!(matches!(
        &small("bulk-over-limit")[..],
        [RespCommand::ProtocolError(_)]
    ));
    assert!(matches!(
        &small("inline-at-limit")[..],
        [RespCommand::Ping(Some(_)), RespCommand::Ping(None)]
    ));
    assert!(matches!(
        &small("inline-too-long")[..],
        [RespCommand::ProtocolError(_)]
    ));
    assert!(matches!(
        &small("command-budget")[..],
        [RespCommand::ProtocolError(_)]
    ));
    assert!(matches!(
        &small("retro")[..],
        [
            RespCommand::KrakenRetroSubscribe {
                horizon_secs: 1_700_000_000,
                ..
            },
            RespCommand::KrakenRegister { horizon_secs: None }
        ]
    ));
    let bad = small("bad-channels");
    assert_eq!(bad.len(), 3);
    assert!(
        bad.iter().all(|c| matches!(c, RespCommand::Refused(_))),
        "{bad:?}"
    );
}
