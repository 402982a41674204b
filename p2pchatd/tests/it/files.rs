//! File transfer: an offer goes to its recipient, who accepts (or has it
//! accepted for a verified peer) or declines; the files arrive whole and
//! verified, in the download folder, their tree kept and nothing
//! overwritten; a killed sender resumes with at most one chunk again, a
//! damaged chunk is fetched again, and hostile offers land nowhere else.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use p2pchat_tui::client::ClientError;
use shared::api::{
    Call, SendParams, TransferDirection, TransferInfo, TransferParams, TransferState,
    TransfersResult, TrustParams, code,
};
use shared::authorship::CAP_SEALS;
use shared::event::EventBody;
use shared::keys::hex;
use shared::rooms::CAP_ROOMS;
use shared::transfer::fetch::{CHUNK as CHUNK_MSG, DONE, GET, Get, HASHES, LISTING};
use shared::transfer::{CAP_FILES, CHUNK, Listed, Manifest, Offer, listing_root};
use shared::wire::{MessageType, PeerMessage};
use testkit::relay::Relay;
use testkit::*;
use tokio::net::TcpListener;

const T: Duration = Duration::from_secs(20);

fn random_file(path: &Path, len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    fastrand::fill(&mut bytes);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(path, &bytes).unwrap();
    bytes
}

async fn send(from: &Daemon, paths: &[&Path], to: &str) -> Result<TransferInfo, ClientError> {
    let paths = paths.iter().map(|p| p.display().to_string()).collect();
    from.client()
        .await
        .call(&Call::Send(SendParams {
            paths,
            to: to.into(),
        }))
        .await
}

async fn answer(d: &Daemon, id: &str, accept: bool) -> Result<TransferInfo, ClientError> {
    let params = TransferParams { id: id.into() };
    let call = if accept {
        Call::Accept(params)
    } else {
        Call::Decline(params)
    };
    d.client().await.call(&call).await
}

async fn transfers(d: &Daemon) -> Vec<TransferInfo> {
    let r: TransfersResult = d.client().await.call(&Call::Transfers).await.unwrap();
    r.transfers
}

/// Waits for transfer `id` to reach `state` (an event); its info then.
async fn reaches(sub: &mut Subscriber, id: &str, state: TransferState) -> TransferInfo {
    let e = sub
        .until(&format!("transfer {id} {}", state.as_str()), T, |e| {
            matches!(&e.body, EventBody::Transfer(t) if t.id == id
                && (t.state == state || t.state.is_over()))
        })
        .await;
    let EventBody::Transfer(t) = e.body else {
        unreachable!()
    };
    assert_eq!(t.state, state, "{t:?}");
    *t
}

/// Every file under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A file and a folder go from amy to bob, who accepts: bob has them
/// whole, the folder's tree kept, no `.part` left; both ends say done.
/// The same file again lands beside the first, never over it.
#[tokio::test]
async fn offered_files_arrive_whole_where_they_belong() {
    let net = TestNet::new();
    let [a, b] = net.linked(["amy", "bob"]).await;
    let src = net.dir.path().join("src");
    let report = random_file(&src.join("report.pdf"), 3 * CHUNK + 12_345);
    let nested = random_file(&src.join("photos/2026/a.jpg"), 70_000);
    random_file(&src.join("photos/b.jpg"), 0);
    let (mut at_a, mut at_b) = (a.subscribe(None).await, b.subscribe(None).await);

    let offered = send(&a, &[&src.join("report.pdf"), &src.join("photos")], "bob")
        .await
        .unwrap();
    assert_eq!((offered.files, offered.state), (3, TransferState::Offered));
    let heard = reaches(&mut at_b, &offered.id, TransferState::Offered).await;
    assert_eq!(heard.direction, TransferDirection::In);
    assert_eq!(heard.nick, "amy");
    assert_eq!(heard.bytes, (3 * CHUNK + 12_345 + 70_000) as u64);
    assert!(
        heard.names.contains(&"photos/2026/a.jpg".to_owned()),
        "{heard:?}"
    );

    answer(&b, &offered.id, true).await.unwrap();
    reaches(&mut at_b, &offered.id, TransferState::Done).await;
    reaches(&mut at_a, &offered.id, TransferState::Done).await;
    let dl = net.downloads_of("bob");
    assert_eq!(
        tree(&dl),
        ["photos/2026/a.jpg", "photos/b.jpg", "report.pdf"].map(PathBuf::from)
    );
    assert_eq!(std::fs::read(dl.join("report.pdf")).unwrap(), report);
    assert_eq!(std::fs::read(dl.join("photos/2026/a.jpg")).unwrap(), nested);

    let again = send(&a, &[&src.join("report.pdf")], "bob").await.unwrap();
    reaches(&mut at_b, &again.id, TransferState::Offered).await;
    answer(&b, &again.id, true).await.unwrap();
    reaches(&mut at_b, &again.id, TransferState::Done).await;
    assert_eq!(std::fs::read(dl.join("report (1).pdf")).unwrap(), report);
    assert_eq!(std::fs::read(dl.join("report.pdf")).unwrap(), report);
}

/// amy and bob, linked, each followed; amy has offered bob a file of
/// `size` random bytes, and bob heard the offer.
struct Offered {
    net: TestNet,
    a: Daemon,
    b: Daemon,
    file: PathBuf,
    at_a: Subscriber,
    at_b: Subscriber,
    offered: TransferInfo,
}

async fn offered_to_bob(name: &str, size: usize) -> Offered {
    let net = TestNet::new();
    let [a, b] = net.linked(["amy", "bob"]).await;
    let file = net.dir.path().join(name);
    random_file(&file, size);
    let (at_a, mut at_b) = (a.subscribe(None).await, b.subscribe(None).await);
    let offered = send(&a, &[&file], "bob").await.unwrap();
    reaches(&mut at_b, &offered.id, TransferState::Offered).await;
    Offered {
        net,
        a,
        b,
        file,
        at_a,
        at_b,
        offered,
    }
}

/// bob declines: amy hears it; nothing lands; the id is answered once.
/// An offer to no one, of nothing, or of a relative path is refused.
#[tokio::test]
async fn a_declined_offer_is_told_to_its_sender_and_bad_offers_are_refused() {
    let Offered {
        net,
        a,
        b,
        file,
        mut at_a,
        offered,
        ..
    } = offered_to_bob("notes.txt", 1000).await;
    answer(&b, &offered.id, false).await.unwrap();
    reaches(&mut at_a, &offered.id, TransferState::Declined).await;
    refused(answer(&b, &offered.id, true).await, code::NO_SUCH_TRANSFER);
    refused(answer(&a, &offered.id, true).await, code::NO_SUCH_TRANSFER);
    assert!(tree(&net.downloads_of("bob")).is_empty());

    refused(send(&a, &[&file], "nobody").await, code::CANNOT_SEND);
    refused(send(&a, &[&file], "amy").await, code::CANNOT_SEND);
    refused(send(&a, &[], "bob").await, code::CANNOT_SEND);
    refused(
        send(&a, &[Path::new("notes.txt")], "bob").await,
        code::CANNOT_SEND,
    );
    let why = refused(
        send(&a, &[&net.dir.path().join("missing")], "bob").await,
        code::CANNOT_SEND,
    );
    assert!(why.contains("missing"), "{why}");
}

/// With `--auto-accept verified`, bob takes amy's offer without asking
/// once amy's key is verified, and not before.
#[tokio::test]
async fn offers_from_a_verified_peer_are_accepted_on_request_only() {
    let net = TestNet::new();
    let [a, b] = net
        .linked_with(["amy", "bob"], &["--auto-accept", "verified"])
        .await;
    let file = net.dir.path().join("build.log");
    let bytes = random_file(&file, 200_000);
    let mut at_b = b.subscribe(None).await;
    let first = send(&a, &[&file], "bob").await.unwrap();
    reaches(&mut at_b, &first.id, TransferState::Offered).await;
    let _: shared::api::TrustResult = b
        .client()
        .await
        .call(&Call::Trust(TrustParams { nick: "amy".into() }))
        .await
        .unwrap();
    let second = send(&a, &[&file], "bob").await.unwrap();
    reaches(&mut at_b, &second.id, TransferState::Done).await;
    assert_eq!(
        std::fs::read(net.downloads_of("bob").join("build.log")).unwrap(),
        bytes
    );
    let still = transfers(&b).await;
    let first = still.iter().find(|t| t.id == first.id).unwrap();
    assert_eq!(first.state, TransferState::Offered, "not accepted unasked");
}

/// amy, and bob linked to her through a relay that carries 4 MiB/s, each
/// with the flags that start it again as it was; amy has offered bob a
/// file of 16 chunks, and bob, who accepted, holds half of it.
struct HalfWay {
    net: TestNet,
    a: Daemon,
    b: Daemon,
    amy: Vec<String>,
    bob: Vec<String>,
    _relay: Relay,
    id: String,
    file: PathBuf,
    bytes: Vec<u8>,
    at_a: Subscriber,
    at_b: Subscriber,
}

const HALF_WAY: usize = 16 * CHUNK;

async fn half_way(name: &str) -> HalfWay {
    let net = TestNet::new();
    // A port of its own, so that a restarted amy is where the relay leads.
    let port = free_tcp_port().to_string();
    let amy = ["--no-discovery", "--port", port.as_str()]
        .map(String::from)
        .to_vec();
    let a = net.daemon_with("amy", &strs(&amy)).await;
    let relay = Relay::start(SocketAddr::from(([127, 0, 0, 1], a.status().await.port))).await;
    relay.forget();
    relay.limit(4 << 20);
    let bob = [
        "--no-discovery".to_owned(),
        "--peer".to_owned(),
        relay.addr.to_string(),
    ]
    .to_vec();
    let b = net.daemon_with("bob", &strs(&bob)).await;
    wait_full_mesh(&[&a, &b], T).await;
    let file = net.dir.path().join(name);
    let bytes = random_file(&file, HALF_WAY);
    let (at_a, mut at_b) = (a.subscribe(None).await, b.subscribe(None).await);
    let offered = send(&a, &[&file], "bob").await.unwrap();
    reaches(&mut at_b, &offered.id, TransferState::Offered).await;
    answer(&b, &offered.id, true).await.unwrap();
    at_b.until(
        "half of it",
        T,
        |e| matches!(&e.body, EventBody::Transfer(t) if t.done >= (HALF_WAY / 2) as u64),
    )
    .await;
    HalfWay {
        net,
        a,
        b,
        amy,
        bob,
        _relay: relay,
        id: offered.id,
        file,
        bytes,
        at_a,
        at_b,
    }
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Kills `d` (-9) and starts it again with `args`.
async fn kill_and_restart(net: &TestNet, mut d: Daemon, nick: &str, args: &[String]) -> Daemon {
    d.signal(Signal::SIGKILL);
    d.exit_within(T).await;
    net.daemon_with(nick, &strs(args)).await
}

/// amy is killed (-9) halfway through sending to bob, and started again:
/// the file completes with the right bytes, and what came in twice is at
/// most the chunk that was in flight.
#[tokio::test]
async fn a_killed_sender_resumes_and_sends_at_most_one_chunk_again() {
    let mut h = half_way("disk.img").await;
    let _a = kill_and_restart(&h.net, h.a, "amy", &h.amy).await;
    reaches(&mut h.at_b, &h.id, TransferState::Waiting).await;
    let done = reaches(&mut h.at_b, &h.id, TransferState::Done).await;
    let name = h.file.file_name().unwrap();
    assert_eq!(
        std::fs::read(h.net.downloads_of("bob").join(name)).unwrap(),
        h.bytes
    );
    // Listing and hashes twice, and the chunk cut in flight, at most.
    let again = done.transferred.saturating_sub(HALF_WAY as u64);
    eprintln!("came in again: {again} bytes (a chunk is {CHUNK})");
    assert!(again <= (CHUNK + 16 * 1024) as u64, "{again} bytes again");
}

/// bob, receiving, is killed (-9) halfway and started again: the
/// transfer goes on from what its `.part` holds, checked against the
/// hashes, and the file is right.
#[tokio::test]
async fn a_killed_recipient_goes_on_from_what_is_on_its_disk() {
    let mut h = half_way("video.mkv").await;
    let b = kill_and_restart(&h.net, h.b, "bob", &h.bob).await;
    reaches(&mut h.at_a, &h.id, TransferState::Done).await;
    let name = h.file.file_name().unwrap();
    assert_eq!(
        std::fs::read(h.net.downloads_of("bob").join(name)).unwrap(),
        h.bytes
    );
    // bob sends his last DONE before he files the transfer as done.
    let t = wait_until("bob to file it done", T, || async {
        let after = transfers(&b).await;
        after
            .into_iter()
            .find(|t| t.id == h.id && t.state == TransferState::Done)
    })
    .await;
    assert!(t.transferred < HALF_WAY as u64, "it started over: {t:?}");
}

/// A relay flips one byte of the file on its way: the damage is caught,
/// the transfer goes on from what was verified, and the file is right.
#[tokio::test]
async fn a_damaged_chunk_is_caught_and_fetched_again() {
    let net = TestNet::new();
    let a = net.daemon_with("amy", &["--no-discovery"]).await;
    let relay = Relay::start(SocketAddr::from(([127, 0, 0, 1], a.status().await.port))).await;
    relay.forget();
    let peer = relay.addr.to_string();
    let b = net
        .daemon_with("bob", &["--no-discovery", "--peer", &peer])
        .await;
    wait_full_mesh(&[&a, &b], T).await;
    let file = net.dir.path().join("data.bin");
    let size = 8 * CHUNK;
    let bytes = random_file(&file, size);
    let mut at_b = b.subscribe(None).await;
    let offered = send(&a, &[&file], "bob").await.unwrap();
    reaches(&mut at_b, &offered.id, TransferState::Offered).await;
    relay.flip_once_at((5 * CHUNK) as u64);
    answer(&b, &offered.id, true).await.unwrap();
    let done = reaches(&mut at_b, &offered.id, TransferState::Done).await;
    assert!(relay.flipped(), "the relay carried the file");
    assert_eq!(
        std::fs::read(net.downloads_of("bob").join("data.bin")).unwrap(),
        bytes
    );
    assert!(
        done.transferred > size as u64,
        "something was fetched again"
    );
}

/// eve, a peer with a key of its own, offers bob files and serves the
/// fetch herself.
struct Eve {
    link: noise::NoiseLink,
    id: String,
    listener: TcpListener,
}

const EVE: [u8; 32] = [9; 32];

impl Eve {
    async fn at(d: &Daemon) -> Self {
        let port = d.status().await.port;
        let link = noise::dial_with_caps(
            SocketAddr::from(([127, 0, 0, 1], port)),
            EVE,
            "eve",
            None,
            &[CAP_SEALS, CAP_ROOMS, CAP_FILES],
        )
        .await
        .unwrap();
        let key = ed25519_dalek::SigningKey::from_bytes(&EVE).verifying_key();
        Self {
            link,
            id: shared::keys::peer_id_of(&key.to_bytes()),
            listener: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        }
    }

    /// Offers what `listing` lists, as `files` files of `bytes` in all.
    async fn offer(&mut self, listing: &[u8], files: u64, bytes: u64) -> String {
        let id = format!("{:016x}", fastrand::u64(..));
        self.offer_as(&id, listing, files, bytes).await;
        id
    }

    /// The same, as offer `id` (an offer made again).
    async fn offer_as(&mut self, id: &str, listing: &[u8], files: u64, bytes: u64) {
        let mut m = PeerMessage::new(
            MessageType::FileOffer,
            format!("{:016x}", fastrand::u64(..)),
            &self.id,
            "eve",
            String::new(),
            chrono::Utc::now(),
            0,
        );
        m.offer = Some(Box::new(Offer {
            id: id.to_owned(),
            files,
            bytes,
            names: vec!["x".into()],
            listing: hex(&listing_root(listing)),
            port: self.listener.local_addr().unwrap().port(),
        }));
        self.link.send(&m.encode()).await.unwrap();
    }

    /// Waits for the answer to offer `id` on the link.
    async fn answer_to(&mut self, id: &str) -> shared::transfer::Answer {
        loop {
            let m = self.link.recv(T).await.expect("an answer on the link");
            if let Some(a) = m.answer.filter(|a| a.id == id) {
                return *a;
            }
        }
    }

    /// Takes bob's fetch of offer `id`, sends `listing`, then for the file
    /// asked for its `hashes` and each of `chunks` as given; then waits
    /// for the end.
    async fn serve(&self, id: &str, listing: &[u8], hashes: &[u8], chunks: &[Vec<u8>]) {
        let (stream, _) = tokio::time::timeout(T, self.listener.accept())
            .await
            .unwrap()
            .unwrap();
        let mut conn = noise::respond(stream, EVE, "eve", &[]).await.unwrap();
        assert_eq!(
            conn.theirs.fetch.as_deref(),
            Some(id),
            "the hello names the offer"
        );
        conn.send_fetch(LISTING, listing).await.unwrap();
        let Ok((GET, body)) = conn.recv_fetch(T).await else {
            return; // refused after the listing
        };
        let get: Get = serde_json::from_slice(&body).unwrap();
        assert_eq!((get.file, get.from), (0, Some(0)));
        conn.send_fetch(HASHES, hashes).await.unwrap();
        for c in chunks {
            conn.send_fetch(CHUNK_MSG, c).await.unwrap();
        }
        // As a sender does: bob's DONE is said back.
        if let Ok((DONE, _)) = conn.recv_fetch(T).await {
            let _ = conn.send_fetch(DONE, &[]).await;
        }
    }
}

fn listing_of(files: &[(&str, &[u8])]) -> (Vec<u8>, Vec<[u8; 32]>) {
    let mut hashes = Vec::new();
    let listed: Vec<Listed> = files
        .iter()
        .map(|(name, bytes)| {
            let m = Manifest::of(*bytes).unwrap();
            hashes.extend(m.hashes.iter().copied());
            Listed {
                name: (*name).into(),
                size: bytes.len() as u64,
                root: hex(&m.root()),
            }
        })
        .collect();
    (serde_json::to_vec(&listed).unwrap(), hashes)
}

/// Hostile offers: names that climb out, absolute, with NUL or newlines,
/// 10,000 characters; a file that arrives larger or smaller than said;
/// 1,000 offers at once. Nothing lands outside the download folder, each
/// is refused or bounded with a reason, and bob chats on.
#[tokio::test]
async fn hostile_offers_land_nowhere_else_and_bob_chats_on() {
    let net = TestNet::new();
    let [a, b] = net.linked(["amy", "bob"]).await;
    let mut eve = Eve::at(&b).await;
    let mut at_b = b.subscribe(None).await;
    let dl = net.downloads_of("bob");
    let body = b"what eve sends".to_vec();
    let one = |name: &str| listing_of(&[(name, &body)]);

    // Names: refused outright, or made safe inside the folder.
    let long = format!("{}.txt", "n".repeat(10_000));
    for (name, lands) in [
        ("../../.bashrc", None),
        ("a/\0b", None),
        ("/etc/passwd", Some("etc/passwd")),
        ("line\none.txt", Some("line_one.txt")),
        (long.as_str(), Some("")),
    ] {
        let (listing, hashes) = one(name);
        let id = eve.offer(&listing, 1, body.len() as u64).await;
        reaches(&mut at_b, &id, TransferState::Offered).await;
        answer(&b, &id, true).await.unwrap();
        let flat: Vec<u8> = hashes.iter().flatten().copied().collect();
        eve.serve(&id, &listing, &flat, std::slice::from_ref(&body))
            .await;
        let end = at_b
            .until(
                "the transfer's end",
                T,
                |e| matches!(&e.body, EventBody::Transfer(t) if t.id == id && t.state.is_over()),
            )
            .await;
        let EventBody::Transfer(t) = end.body else {
            unreachable!()
        };
        match lands {
            None => {
                assert_eq!(t.state, TransferState::Failed, "{name:?}: {t:?}");
                assert!(
                    t.reason.as_deref().unwrap_or("").contains("refused"),
                    "{t:?}"
                );
            }
            Some("") => {
                assert_eq!(t.state, TransferState::Done, "{t:?}");
                let cut = tree(&dl)
                    .into_iter()
                    .find(|p| p.to_string_lossy().starts_with("nnn"));
                let cut = cut.expect("the long name landed, cut");
                assert_eq!(
                    cut.as_os_str().len(),
                    shared::transfer::MAX_NAME_BYTES,
                    "{cut:?}"
                );
                assert!(cut.to_string_lossy().ends_with(".txt"));
            }
            Some(path) => {
                assert_eq!(t.state, TransferState::Done, "{t:?}");
                assert_eq!(std::fs::read(dl.join(path)).unwrap(), body);
            }
        }
    }

    // Sizes: a chunk larger, or smaller, than the listing says.
    for sent in [
        [body.clone(), b"more".to_vec()].concat(),
        body[..4].to_vec(),
    ] {
        let (listing, hashes) = one("sized.bin");
        let id = eve.offer(&listing, 1, body.len() as u64).await;
        reaches(&mut at_b, &id, TransferState::Offered).await;
        answer(&b, &id, true).await.unwrap();
        let flat: Vec<u8> = hashes.iter().flatten().copied().collect();
        eve.serve(&id, &listing, &flat, &[sent]).await;
        let t = reaches(&mut at_b, &id, TransferState::Failed).await;
        assert!(
            t.reason
                .as_deref()
                .unwrap_or("")
                .contains("bytes for chunk"),
            "{t:?}"
        );
    }
    // A listing that is not the offered one.
    let (listing, _) = one("x");
    let id = eve.offer(&listing, 1, body.len() as u64).await;
    reaches(&mut at_b, &id, TransferState::Offered).await;
    answer(&b, &id, true).await.unwrap();
    eve.serve(&id, &one("y").0, &[], &[]).await;
    let t = reaches(&mut at_b, &id, TransferState::Failed).await;
    assert!(
        t.reason.as_deref().unwrap_or("").contains("does not match"),
        "{t:?}"
    );

    // A chunk that does not match its hash: fetched again, and the file
    // is the one the offer named.
    let (listing, hashes) = one("checked.bin");
    let flat: Vec<u8> = hashes.iter().flatten().copied().collect();
    let id = eve.offer(&listing, 1, body.len() as u64).await;
    reaches(&mut at_b, &id, TransferState::Offered).await;
    answer(&b, &id, true).await.unwrap();
    let mut damaged = body.clone();
    damaged[3] ^= 1;
    eve.serve(&id, &listing, &flat, &[damaged]).await;
    reaches(&mut at_b, &id, TransferState::Waiting).await;
    eve.serve(&id, &listing, &flat, std::slice::from_ref(&body))
        .await;
    reaches(&mut at_b, &id, TransferState::Done).await;
    assert_eq!(std::fs::read(dl.join("checked.bin")).unwrap(), body);

    // A thousand offers at once: sixteen wait, the rest are refused.
    let before = transfers(&b).await.len();
    let (listing, _) = one("flood");
    for _ in 0..1000 {
        eve.offer(&listing, 1, 1).await;
    }
    // bob takes eve's lines in order: the answer to one more offer comes
    // once he has taken all of them (it is refused, as the flood's were).
    let last = eve.offer(&listing, 1, 1).await;
    let refused = eve.answer_to(&last).await;
    assert!(refused.reason.is_some(), "{refused:?}");
    a.say("still chatting").await;
    at_b.until("amy's line after the flood", T, |e| {
        text(e) == "still chatting"
    })
    .await;
    let pending = transfers(&b)
        .await
        .iter()
        .filter(|t| t.state == TransferState::Offered && t.nick == "eve")
        .count();
    assert_eq!(pending, shared::transfer::MAX_PENDING_PER_PEER);
    assert!(transfers(&b).await.len() < before + 100);

    // Nothing landed but in the download folder.
    for p in tree(net.dir.path()) {
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        if ["passwd", "line_one.txt", "sized.bin"].contains(&name.as_ref())
            || name.contains("bashrc")
        {
            assert!(
                net.dir.path().join(&p).starts_with(&dl),
                "{p:?} landed outside"
            );
        }
    }
    assert!(
        !tree(&dl)
            .iter()
            .any(|p| p.to_string_lossy().contains("bashrc"))
    );
}

/// amy's file is gone by the time bob accepts: the transfer fails at both
/// ends, saying so, and bob keeps no file.
#[tokio::test]
async fn a_vanished_source_fails_the_transfer_with_its_reason() {
    // amy is kept (a daemon dropped is a daemon stopped).
    let Offered {
        net,
        a: _a,
        b,
        file,
        mut at_a,
        mut at_b,
        offered,
    } = offered_to_bob("draft.txt", 5000).await;
    std::fs::remove_file(&file).unwrap();
    answer(&b, &offered.id, true).await.unwrap();
    let at_sender = reaches(&mut at_a, &offered.id, TransferState::Failed).await;
    let at_recipient = reaches(&mut at_b, &offered.id, TransferState::Failed).await;
    for t in [&at_sender, &at_recipient] {
        assert!(
            t.reason.as_deref().unwrap_or("").contains("is gone"),
            "{t:?}"
        );
    }
    let landed = tree(&net.downloads_of("bob"));
    assert!(
        landed
            .iter()
            .all(|p| p.to_string_lossy().ends_with(".part")),
        "{landed:?}"
    );
}

/// An offer over the recipient's `--max-offer-size` is refused unseen,
/// with that reason back to the sender; one larger than the free space is
/// not accepted, and says why.
#[tokio::test]
async fn offers_too_big_are_refused_and_no_room_is_said() {
    let net = TestNet::new();
    let [a, b] = net
        .linked_with(["amy", "bob"], &["--max-offer-size", "10K"])
        .await;
    let file = net.dir.path().join("big.iso");
    random_file(&file, 20_000);
    let mut at_a = a.subscribe(None).await;
    let offered = send(&a, &[&file], "bob").await.unwrap();
    let t = reaches(&mut at_a, &offered.id, TransferState::Declined).await;
    assert!(
        t.reason.as_deref().unwrap_or("").contains("more than"),
        "{t:?}"
    );
    assert!(transfers(&b).await.is_empty(), "bob never saw it");

    let c = net
        .daemon_with("carol", &["--max-offer-size", "500G"])
        .await;
    let mut eve = Eve::at(&c).await;
    let mut at_c = c.subscribe(None).await;
    let (listing, _) = listing_of(&[("huge.bin", b"x")]);
    // More than carol's disk has free, within her limit.
    let downloads = net.downloads_of("carol");
    std::fs::create_dir_all(&downloads).unwrap();
    let free = nix::sys::statvfs::statvfs(&downloads)
        .map(|s| s.blocks_available() * s.fragment_size())
        .unwrap();
    let huge: u64 = 499 << 30;
    if free >= huge {
        return eprintln!("skipped the no-room part: {free} bytes free");
    }
    let id = eve.offer(&listing, 1, huge).await;
    reaches(&mut at_c, &id, TransferState::Offered).await;
    let why = refused(answer(&c, &id, true).await, code::NO_ROOM_FOR_FILES);
    assert!(why.contains("free"), "{why}");
    let still = transfers(&c).await;
    assert_eq!(still[0].state, TransferState::Offered, "still waiting");
}

/// bob's download folder is a small disk of his own, which fills up while
/// amy's file arrives: the transfer fails at both ends saying so, what
/// arrived stays in the `.part`, and bob chats on.
#[tokio::test]
async fn a_full_disk_fails_the_transfer_and_keeps_the_part() {
    let net = TestNet::new();
    let a = net.daemon_with("amy", &["--no-discovery"]).await;
    let relay = Relay::start(SocketAddr::from(([127, 0, 0, 1], a.status().await.port))).await;
    relay.forget();
    relay.limit(2 << 20);
    let dl = net.downloads_of("bob");
    std::fs::create_dir_all(&dl).unwrap();
    let d = dl.display().to_string();
    let mount = format!("mount -t tmpfs -o size=32m,mode=0700 tmpfs {d}");
    let peer = relay.addr.to_string();
    let flags = ["--no-discovery", "--peer", peer.as_str()];
    let Some(b) = net.daemon_with_own_mounts("bob", &flags, &mount).await else {
        return;
    };
    wait_full_mesh(&[&a, &b], T).await;
    // Larger than what the sockets and the relay hold: amy is still
    // sending when bob gives up, and must hear why.
    let file = net.dir.path().join("backup.tar");
    random_file(&file, 24 * CHUNK);
    let (mut at_a, mut at_b) = (a.subscribe(None).await, b.subscribe(None).await);
    let offered = send(&a, &[&file], "bob").await.unwrap();
    reaches(&mut at_b, &offered.id, TransferState::Offered).await;
    answer(&b, &offered.id, true).await.unwrap();
    at_b.until(
        "the first chunk",
        T,
        |e| matches!(&e.body, EventBody::Transfer(t) if t.done >= CHUNK as u64),
    )
    .await;
    // What is left of the disk goes (cat stops when it is full).
    let pid = b.status().await.pid;
    in_namespace_of(pid, &format!("cat /dev/zero > {d}/filler"));
    let t = reaches(&mut at_b, &offered.id, TransferState::Failed).await;
    assert!(
        t.reason.as_deref().unwrap_or("").contains("disk is full"),
        "{t:?}"
    );
    let t = reaches(&mut at_a, &offered.id, TransferState::Failed).await;
    assert!(
        t.reason.as_deref().unwrap_or("").contains("disk is full"),
        "{t:?}"
    );
    let out = in_namespace_of(pid, &format!("stat -c %s {d}/backup.tar.part"));
    let kept: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(
        kept >= CHUNK as u64,
        "the .part keeps what arrived: {out:?}"
    );
    a.say("after the full disk").await;
    at_b.until("amy's line", T, |e| text(e) == "after the full disk")
        .await;
}

/// bob cancels a transfer halfway: both ends stop, amy hearing who did;
/// amy cancels an offer bob has not answered: bob's goes too.
#[tokio::test]
async fn a_cancel_at_either_end_stops_both() {
    let mut h = half_way("stream.bin").await;
    let cancelled: TransferInfo =
        h.b.client()
            .await
            .call(&Call::Cancel(TransferParams { id: h.id.clone() }))
            .await
            .unwrap();
    assert_eq!(cancelled.state, TransferState::Failed);
    let t = reaches(&mut h.at_a, &h.id, TransferState::Failed).await;
    assert_eq!(t.reason.as_deref(), Some("bob stopped it: cancelled"));
    let part = h.net.downloads_of("bob").join("stream.bin.part");
    assert!(part.exists(), "what arrived stays");

    let offered = send(&h.a, &[&h.file], "bob").await.unwrap();
    reaches(&mut h.at_b, &offered.id, TransferState::Offered).await;
    let _: TransferInfo =
        h.a.client()
            .await
            .call(&Call::Cancel(TransferParams {
                id: offered.id.clone(),
            }))
            .await
            .unwrap();
    let t = reaches(&mut h.at_b, &offered.id, TransferState::Failed).await;
    assert_eq!(t.reason.as_deref(), Some("amy stopped it: cancelled"));
    refused(
        answer(&h.b, &offered.id, true).await,
        code::NO_SUCH_TRANSFER,
    );
}

/// amy has offered eve a file of `size` bytes, and eve's fetch
/// connection has the listing.
struct EveFetches {
    net: TestNet,
    a: Daemon,
    eve: Eve,
    at_a: Subscriber,
    offered: TransferInfo,
    conn: noise::NoiseLink,
}

async fn eve_fetches_from_amy(size: usize) -> EveFetches {
    let net = TestNet::new();
    let a = net.daemon("amy").await;
    let eve = Eve::at(&a).await;
    wait_until("eve to be linked", T, || async {
        let peers = a.try_peers().await.ok()?;
        peers
            .iter()
            .any(|p| p.nick == "eve" && p.connected)
            .then_some(())
    })
    .await;
    let file = net.dir.path().join("notes.md");
    random_file(&file, size);
    let mut at_a = a.subscribe(None).await;
    let offered = send(&a, &[&file], "eve").await.unwrap();
    let port = a.status().await.port;
    let mut conn = noise::fetch(SocketAddr::from(([127, 0, 0, 1], port)), EVE, &offered.id)
        .await
        .unwrap();
    let (kind, _) = conn.recv_fetch(T).await.unwrap();
    assert_eq!(kind, LISTING);
    reaches(&mut at_a, &offered.id, TransferState::Active).await;
    EveFetches {
        net,
        a,
        eve,
        at_a,
        offered,
        conn,
    }
}

/// While amy sends, eve says more than an `ERROR`: amy does not keep what
/// eve sends, she ends the transfer, saying why.
#[tokio::test]
async fn a_recipient_that_talks_while_a_file_is_sent_is_cut_off() {
    let EveFetches {
        net: _net,
        a: _a,
        eve: _eve,
        mut at_a,
        offered,
        mut conn,
    } = eve_fetches_from_amy(4 * CHUNK).await;
    let get = serde_json::to_vec(&Get {
        file: 0,
        from: Some(0),
    })
    .unwrap();
    conn.send_fetch(GET, &get).await.unwrap();
    conn.send_fetch(GET, &get).await.unwrap();
    let t = reaches(&mut at_a, &offered.id, TransferState::Failed).await;
    assert!(
        t.reason
            .as_deref()
            .unwrap_or("")
            .contains("while a file was sent"),
        "{t:?}"
    );
}

/// eve fetched from amy and got it all, but amy never heard the last
/// DONE: eve's word on the link (said at once, and again at link-up)
/// ends amy's transfer as done.
#[tokio::test]
async fn the_recipients_word_on_the_link_ends_a_transfer_whose_done_was_lost() {
    let EveFetches {
        net: _net,
        a: _a,
        mut eve,
        mut at_a,
        offered,
        conn,
    } = eve_fetches_from_amy(2000).await;
    drop(conn);
    reaches(&mut at_a, &offered.id, TransferState::Waiting).await;
    let mut m = PeerMessage::new(
        MessageType::FileAnswer,
        format!("{:016x}", fastrand::u64(..)),
        &eve.id,
        "eve",
        String::new(),
        chrono::Utc::now(),
        0,
    );
    m.answer = Some(Box::new(shared::transfer::Answer {
        id: offered.id.clone(),
        reason: None,
        done: true,
    }));
    eve.link.send(&m.encode()).await.unwrap();
    reaches(&mut at_a, &offered.id, TransferState::Done).await;
}

/// bob declines eve's offer, and he stops before eve heard him (as if the
/// link had been down): the decline is written down, so when eve offers
/// it again to bob started anew, she gets the same answer, and bob
/// neither shows it as a new offer nor fetches it.
#[tokio::test]
async fn an_offer_declined_before_a_restart_is_declined_again_after_it() {
    let net = TestNet::new();
    let mut b = net.daemon("bob").await;
    let mut eve = Eve::at(&b).await;
    let mut at_b = b.subscribe(None).await;
    let (listing, _) = listing_of(&[("a.txt", b"hello")]);
    let id = eve.offer(&listing, 1, 5).await;
    reaches(&mut at_b, &id, TransferState::Offered).await;
    answer(&b, &id, false).await.unwrap();
    drop((eve, at_b));
    b.signal(Signal::SIGTERM);
    b.exit_within(T).await;

    let b = net.daemon("bob").await;
    let mut eve = Eve::at(&b).await;
    // Said again at link-up, and again to the offer made again.
    let at_link_up = eve.answer_to(&id).await;
    assert!(!at_link_up.done, "{at_link_up:?}");
    eve.offer_as(&id, &listing, 1, 5).await;
    let again = eve.answer_to(&id).await;
    assert!(!again.done, "{again:?}");
    let known = transfers(&b).await;
    let t = known.iter().find(|t| t.id == id).expect("still known");
    assert_eq!(t.state, TransferState::Declined, "{known:?}");
}

/// A client that lists the transfers and then attaches misses no change
/// in between: attaching tells where every transfer not over stands (and
/// a subscription that does not attach is told nothing it did not see).
#[tokio::test]
async fn attaching_tells_where_every_transfer_not_over_stands() {
    let net = TestNet::new();
    let [a, b] = net.linked(["amy", "bob"]).await;
    let file = net.dir.path().join("notes.txt");
    random_file(&file, 1000);
    let mut at_b = b.subscribe(None).await;
    let offered = send(&a, &[&file], "bob").await.unwrap();
    reaches(&mut at_b, &offered.id, TransferState::Offered).await;
    let (mut person, _) = b.attach().await;
    let e = person
        .until("the offer waiting", T, |e| {
            matches!(&e.body, EventBody::Transfer(_))
        })
        .await;
    let EventBody::Transfer(t) = e.body else {
        unreachable!()
    };
    assert_eq!(
        (t.id.as_str(), t.state),
        (offered.id.as_str(), TransferState::Offered)
    );
    // A script's subscription is not told it again; a line comes first.
    let mut script = b.subscribe(None).await;
    a.say("after").await;
    let next = script
        .until("a line or a transfer", T, |e| {
            matches!(&e.body, EventBody::Message { .. } | EventBody::Transfer(_))
        })
        .await;
    assert!(matches!(next.body, EventBody::Message { .. }), "{next:?}");
}
