//! A Go peer, played byte for byte as PROTOCOL.md describes it: its
//! datagrams, its identifying and hello joins, its chat lines, its
//! nick-change join, its silence rule, its refusal of a redialled id. Every
//! line the daemon sends it is checked the way the Go program reads it.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use serde_json::Value;
use shared::api::{LinkDirection, PeerKind, Trust};
use shared::event::EventBody;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

use testkit::*;

const T: Duration = Duration::from_secs(10);

struct GoPeer {
    id: String,
    nick: String,
    port: u16,
    udp: UdpSocket,
    group: SocketAddrV4,
    seq: u64,
}

fn go_now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true)
}

impl GoPeer {
    fn new(group: SocketAddrV4, id: &str, nick: &str, port: u16) -> Self {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        s.set_reuse_address(true).unwrap();
        s.set_reuse_port(true).unwrap();
        s.bind(&SocketAddr::V4(group).into()).unwrap();
        s.join_multicast_v4(group.ip(), &Ipv4Addr::LOCALHOST)
            .unwrap();
        s.set_multicast_if_v4(&Ipv4Addr::LOCALHOST).unwrap();
        s.set_multicast_loop_v4(true).unwrap();
        s.set_multicast_ttl_v4(1).unwrap();
        s.set_nonblocking(true).unwrap();
        Self {
            id: id.into(),
            nick: nick.into(),
            port,
            udp: UdpSocket::from_std(s.into()).unwrap(),
            group,
            seq: 0,
        }
    }

    /// A datagram exactly as the Go program writes it.
    async fn datagram(&self, kind: &str) {
        let address = if kind == "leave" {
            String::new()
        } else {
            format!("0.0.0.0:{}", self.port)
        };
        let d = format!(
            r#"{{"type":"{kind}","peer_id":"{}","username":"{}","address":"{address}","port":{},"timestamp":"{}","sequence":0}}"#,
            self.id,
            self.nick,
            self.port,
            go_now()
        );
        self.udp.send_to(d.as_bytes(), self.group).await.unwrap();
    }

    /// Reads datagrams until one from the daemon; checks Go can read it.
    async fn hear_daemon(&self) -> (String, u16) {
        let mut buf = [0u8; 2048];
        tokio::time::timeout(T, async {
            loop {
                let (n, _) = self.udp.recv_from(&mut buf).await.unwrap();
                assert!(n <= 1024, "datagram of {n} bytes");
                let v: Value = serde_json::from_slice(&buf[..n]).unwrap();
                if v["peer_id"] == self.id.as_str() {
                    continue;
                }
                for f in ["type", "peer_id", "username", "address", "timestamp"] {
                    assert!(v[f].is_string(), "datagram without string {f}: {v}");
                }
                assert!(
                    ["announce", "ping", "pong", "leave"].contains(&v["type"].as_str().unwrap())
                );
                assert!(
                    chrono::DateTime::parse_from_rfc3339(v["timestamp"].as_str().unwrap()).is_ok()
                );
                assert!(v["sequence"].is_u64() && v["port"].is_u64());
                return (
                    v["peer_id"].as_str().unwrap().to_owned(),
                    u16::try_from(v["port"].as_u64().unwrap()).unwrap(),
                );
            }
        })
        .await
        .expect("a datagram from the daemon")
    }

    /// A chat-wire line exactly as the Go program writes it.
    fn line(&mut self, kind: &str, content: &str, username: &str) -> String {
        self.seq += 1;
        format!(
            r#"{{"id":"{:016x}","type":"{kind}","sender_id":"{}","username":"{username}","content":"{content}","timestamp":"{}","sequence":{},"room_id":"general"}}"#,
            fastrand::u64(..),
            self.id,
            go_now(),
            self.seq
        ) + "\n"
    }

    /// Connects to the daemon's chat port and says the identifying join,
    /// as the Go program does when it dials.
    async fn dial(
        &self,
        port: u16,
    ) -> (
        BufReader<tokio::net::tcp::OwnedReadHalf>,
        tokio::net::tcp::OwnedWriteHalf,
    ) {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (r, mut w) = stream.into_split();
        w.write_all(self.identifying_join().as_bytes())
            .await
            .unwrap();
        (BufReader::new(r), w)
    }

    fn identifying_join(&self) -> String {
        format!(
            r#"{{"id":"{:016x}","type":"join","sender_id":"{}","username":"{}","content":"{} joined the chat","timestamp":"{}","sequence":0,"room_id":"general"}}"#,
            fastrand::u64(..),
            self.id,
            self.nick,
            self.nick,
            go_now()
        ) + "\n"
    }
}

/// Waits until `d` is linked with the Go peer `id`; its entry.
async fn linked_go(d: &Daemon, id: &str) -> shared::api::PeerInfo {
    wait_until("the Go peer to be linked", T, || async {
        d.try_peers()
            .await
            .ok()?
            .into_iter()
            .find(|p| p.peer_id == id && p.connected)
    })
    .await
}

/// What the Go program does with a line: parse it into its struct, drop it
/// without `id`, `type` or `sender_id`. We require more: nothing it would
/// drop or show as garbage.
fn go_accepts(line: &str) -> Value {
    let v: Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("Go cannot parse {line:?}: {e}"));
    let o = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {line}"));
    for f in ["id", "type", "sender_id"] {
        assert!(
            o.get(f)
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty()),
            "{f} missing in {line}"
        );
    }
    for f in ["username", "content", "room_id"] {
        assert!(
            o.get(f).is_none_or(Value::is_string),
            "{f} not a string in {line}"
        );
    }
    assert!(
        o.get("sequence").is_none_or(Value::is_u64),
        "sequence in {line}"
    );
    if let Some(ts) = o.get("timestamp") {
        assert!(
            ts.as_str()
                .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()),
            "timestamp Go's time.Time cannot read in {line}"
        );
    }
    assert!(
        o.get("metadata").is_none_or(Value::is_object),
        "metadata in {line}"
    );
    let t = o["type"].as_str().unwrap();
    assert!(
        ["chat", "join", "leave", "heartbeat"].contains(&t),
        "type {t} unknown to Go: {line}"
    );
    v
}

/// Reads lines from the daemon until `pred` holds, checking each as Go.
async fn read_until(
    r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    seen: &mut Vec<Value>,
    mut pred: impl FnMut(&Value) -> bool,
) -> Value {
    tokio::time::timeout(T, async {
        loop {
            let mut line = String::new();
            assert!(
                r.read_line(&mut line).await.unwrap() > 0,
                "daemon closed the link"
            );
            let v = go_accepts(&line);
            seen.push(v.clone());
            if pred(&v) {
                return v;
            }
        }
    })
    .await
    .expect("the line in time")
}

#[tokio::test]
async fn a_go_peer_that_dials_us_chats_both_ways() {
    let net = TestNet::new();
    let d = net.daemon("mmm").await;
    let mut events = d.subscribe(None).await;
    let mut go = GoPeer::new(net.group, "aaa_7", "gopher", 1);
    go.datagram("announce").await;
    let (daemon_id, daemon_port) = go.hear_daemon().await;
    assert!(
        go.id < daemon_id,
        "the Go peer has the smaller id, so it dials"
    );

    let (mut r, mut w) = go.dial(daemon_port).await;
    go.seq = 45; // the counter runs on through lines dropped earlier
    let hello = go.line("join", "gopher joined the chat", "gopher");
    w.write_all(hello.as_bytes()).await.unwrap();

    let p = linked_go(&d, "aaa_7").await;
    assert_eq!(
        (p.link, p.kind, p.nick.as_str()),
        (Some(LinkDirection::Accepted), Some(PeerKind::Go), "gopher")
    );
    assert_eq!(
        (p.encrypted, p.trust, p.fingerprint),
        (false, Some(Trust::Plaintext), None)
    );
    let join = events
        .until("the join", T, |e| matches!(e.body, EventBody::Join { .. }))
        .await;
    assert!(matches!(join.body, EventBody::Join { ref peer_id, .. } if peer_id == "aaa_7"));

    // Go → us, including an action and a nick change.
    w.write_all(go.line("chat", "hello from go", "gopher").as_bytes())
        .await
        .unwrap();
    w.write_all(go.line("chat", "/me waves", "gopher").as_bytes())
        .await
        .unwrap();
    w.write_all(
        go.line("join", "gopher changed their name to gophy", "gophy")
            .as_bytes(),
    )
    .await
    .unwrap();
    w.write_all(go.line("chat", "renamed", "gophy").as_bytes())
        .await
        .unwrap();
    let m = events.messages(2, T).await;
    assert!(
        matches!(&m[0].body, EventBody::Message { nick, text, action: false, trust: Some(Trust::Plaintext), fingerprint: None, .. } if nick == "gopher" && text == "hello from go"),
        "{m:?}"
    );
    assert!(matches!(&m[1].body, EventBody::Message { text, action: true, .. } if text == "waves"));
    let n = events
        .until("the nick change", T, |e| {
            matches!(e.body, EventBody::Nick { .. })
        })
        .await;
    assert_eq!(
        n.body,
        EventBody::Nick {
            peer_id: "aaa_7".into(),
            old: "gopher".into(),
            new: "gophy".into()
        }
    );
    let m = events.messages(1, T).await;
    assert!(matches!(&m[0].body, EventBody::Message { nick, .. } if nick == "gophy"));

    // Us → Go: only lines Go accepts, and no join on a link Go opened.
    d.say("hello go").await;
    let mut seen = Vec::new();
    let got = read_until(&mut r, &mut seen, |v| v["type"] == "chat").await;
    assert_eq!(got["content"], "hello go");
    assert_eq!(got["sender_id"], daemon_id.as_str());
    assert_eq!(got["room_id"], "general");
    assert!(
        seen.iter().all(|v| v["type"] != "join"),
        "the acceptor sent a join: {seen:?}"
    );

    // A clean Go stop: TCP leave, then the multicast leave.
    w.write_all(go.line("leave", "gophy left the chat", "gophy").as_bytes())
        .await
        .unwrap();
    let l = events
        .until("the leave", T, |e| {
            matches!(e.body, EventBody::Leave { .. })
        })
        .await;
    assert!(matches!(&l.body, EventBody::Leave { reason: Some(r), .. } if r == "quit"));
    drop(w);
    go.datagram("leave").await;
    wait_until("the Go peer to be gone", T, || async {
        let peers = d.try_peers().await.ok()?;
        peers.iter().all(|p| p.peer_id != "aaa_7").then_some(())
    })
    .await;
}

#[tokio::test]
async fn we_dial_a_go_peer_whose_listener_comes_up_late() {
    let net = TestNet::new();
    let d = net.daemon("mmm").await;
    let mut events = d.subscribe(None).await;
    let port = free_tcp_port();
    let mut go = GoPeer::new(net.group, "zzz_7", "gopher", port);
    // The Go peer announces before its listener is up: the first dial is
    // refused and must be retried soon, not after a long backoff.
    let started = Instant::now();
    go.datagram("announce").await;
    let (daemon_id, _) = go.hear_daemon().await;
    assert!(daemon_id < go.id, "we have the smaller id, so we dial");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let (stream, _) = tokio::time::timeout(T, listener.accept())
        .await
        .unwrap()
        .unwrap();
    let linked = started.elapsed();
    eprintln!("dialed the late Go listener {linked:?} after its first announce");
    assert!(linked < Duration::from_millis(1500), "{linked:?}");

    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut seen = Vec::new();
    // Identifying join (sequence 0), then the hello join.
    let first = read_until(&mut r, &mut seen, |_| true).await;
    assert_eq!(
        (first["type"].as_str(), first["sequence"].as_u64()),
        (Some("join"), Some(0))
    );
    assert_eq!(first["sender_id"], daemon_id.as_str());
    let hello = read_until(&mut r, &mut seen, |_| true).await;
    assert_eq!(hello["type"], "join");
    assert!(hello["sequence"].as_u64().unwrap() > 0);
    assert_eq!(hello["content"], "mmm joined the chat");

    let p = linked_go(&d, "zzz_7").await;
    assert_eq!(
        (p.link, p.kind, p.encrypted, p.trust),
        (
            Some(LinkDirection::Dialed),
            Some(PeerKind::Go),
            false,
            Some(Trust::Plaintext)
        )
    );

    w.write_all(go.line("chat", "hi from go", "gopher").as_bytes())
        .await
        .unwrap();
    assert_eq!(text(&events.messages(1, T).await[0]), "hi from go");
    d.say("hi go").await;
    let got = read_until(&mut r, &mut seen, |v| v["type"] == "chat").await;
    assert_eq!(got["content"], "hi go");

    // Our nick change reaches Go as the join it sends for one.
    let _: shared::api::NickResult = d
        .client()
        .await
        .call(&shared::api::Call::Nick(shared::api::NickParams {
            name: "mona".into(),
        }))
        .await
        .unwrap();
    let j = read_until(&mut r, &mut seen, |v| v["type"] == "join").await;
    assert_eq!(
        (j["username"].as_str(), j["content"].as_str()),
        (Some("mona"), Some("mmm changed their name to mona"))
    );
}

#[tokio::test]
async fn a_go_peer_that_refuses_our_id_is_not_hammered() {
    let net = TestNet::new();
    let d = net.daemon("mmm").await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let go = GoPeer::new(net.group, "zzz_8", "gopher", port);
    go.datagram("announce").await;
    // Like a Go peer whose state for us is cancelled: read the identifying
    // line, close at once. Count how often the daemon comes back.
    let accepts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepts.clone();
    let server = tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut r = BufReader::new(s);
            let mut line = String::new();
            let _ = r.read_line(&mut line).await;
        }
    });
    wait_until("the first dial", T, || async {
        (accepts.load(std::sync::atomic::Ordering::SeqCst) >= 1).then_some(())
    })
    .await;
    // A bounded observation window: a spinning dialer would come back many
    // times; ours waits 15 s before asking again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(accepts.load(std::sync::atomic::Ordering::SeqCst), 1);
    server.abort();
    assert!(d.peers().await.iter().all(|p| !p.connected));
}

/// The Go peer drops a link silent for 2 minutes. Scaled down 240 times
/// (an in-process daemon with a 250 ms Go heartbeat against a 500 ms read
/// deadline), an idle link to Go must never hit it.
#[tokio::test]
async fn an_idle_link_to_go_never_trips_its_silence_rule() {
    use p2pchatd::config::{Config, DiscoveryConfig, Timing};
    let net = TestNet::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = Config {
        nick: "mmm".into(),
        listen: Ipv4Addr::LOCALHOST.into(),
        port: Some(0),
        discovery: Some(DiscoveryConfig {
            group: net.group,
            interfaces: vec![Ipv4Addr::LOCALHOST],
        }),
        static_peers: vec![],
        socket: net.socket_for("inproc"),
        identity: Some(net.home_of("inproc").join("identity")),
        network_key: None,
        require_encryption: false,
        plaintext_links: false,
        history: 100,
        state_dir: Some(net.home_of("inproc").join("state")),
        retention: p2pchatd::store::Retention::default(),
        notify: p2pchatd::config::Notify::default(),
        files: p2pchatd::config::Files::default(),
        config_file: None,
        timing: Timing {
            go_heartbeat: Duration::from_millis(250),
            ..Timing::default()
        },
    };
    let bound = p2pchatd::node::bind(&config, false).unwrap();
    let stop = CancellationToken::new();
    let node = tokio::spawn(p2pchatd::node::serve(config, bound, stop.clone(), |_| {}));

    let go = GoPeer::new(net.group, "zzz_9", "gopher", port);
    go.datagram("announce").await;
    let (stream, _) = tokio::time::timeout(T, listener.accept())
        .await
        .unwrap()
        .unwrap();
    let mut r = BufReader::new(stream);
    let deadline = Duration::from_millis(500);
    let started = Instant::now();
    let mut beats = 0;
    while started.elapsed() < Duration::from_secs(3) {
        let mut line = String::new();
        let n = tokio::time::timeout(deadline, r.read_line(&mut line))
            .await
            .expect("the link went silent past the (scaled) Go read deadline")
            .unwrap();
        assert!(n > 0, "closed");
        if go_accepts(&line)["type"] == "heartbeat" {
            beats += 1;
        }
    }
    assert!(beats >= 5, "{beats} heartbeats");
    stop.cancel();
    node.await.unwrap();
}

/// A Go user may pick any nick; a 60 KB one is still shown in at most the
/// 20 characters ours may have (it was once cut to 64).
#[tokio::test]
async fn a_huge_foreign_nick_is_shown_in_twenty_characters() {
    let net = TestNet::new();
    let d = net.daemon("mmm").await;
    let mut events = d.subscribe(None).await;
    let huge = "g".repeat(60_000);
    let mut go = GoPeer::new(net.group, "aaa_8", "gopher", 1);
    go.datagram("announce").await;
    let (_, daemon_port) = go.hear_daemon().await;
    let mut s = TcpStream::connect(("127.0.0.1", daemon_port))
        .await
        .unwrap();
    let join = format!(
        r#"{{"id":"{:016x}","type":"join","sender_id":"aaa_8","username":"{huge}","content":"joined","timestamp":"{}","sequence":0,"room_id":"general"}}"#,
        fastrand::u64(..),
        go_now()
    ) + "\n";
    s.write_all(join.as_bytes()).await.unwrap();
    s.write_all(go.line("chat", "hi", &huge).as_bytes())
        .await
        .unwrap();
    let m = events.messages(1, T).await;
    let EventBody::Message { nick, .. } = &m[0].body else {
        unreachable!()
    };
    assert_eq!(nick.chars().count(), 20, "shown as {nick:?}");
    let peers = d.peers().await;
    let p = peers.iter().find(|p| p.peer_id == "aaa_8").unwrap();
    assert_eq!(p.nick.chars().count(), 20, "listed as {:?}", p.nick);
    eprintln!("a nick of {} characters was shown in 20", huge.len());
}

/// A Go peer knows one room: it gets `#general` as before and nothing of
/// another room (not its lines, not its seals, not who is in it), and a
/// direct message to it is refused, never sent in the clear.
#[tokio::test]
async fn a_go_peer_sees_general_only_and_gets_no_direct_message() {
    let net = TestNet::new();
    let d = net.daemon("mmm").await;
    let mut go = GoPeer::new(net.group, "aaa_8", "gopher", 1);
    go.datagram("announce").await;
    let (_, daemon_port) = go.hear_daemon().await;
    let (mut r, mut w) = go.dial(daemon_port).await;
    linked_go(&d, "aaa_8").await;

    d.join("#ops").await;
    d.say_to(Some("#ops"), None, "ops only").await.unwrap();
    let why = refused(
        d.say_to(None, Some("gopher"), "just for you").await,
        shared::api::code::CANNOT_DM,
    );
    assert!(why.contains("Go peer"), "{why}");
    // Nor a file: it has no key to encrypt one to.
    let file = net.dir.path().join("report.pdf");
    std::fs::write(&file, b"quarterly").unwrap();
    let offer = d
        .client()
        .await
        .call::<shared::api::TransferInfo>(&shared::api::Call::Send(shared::api::SendParams {
            paths: vec![file.display().to_string()],
            to: "gopher".into(),
        }))
        .await;
    let why = refused(offer, shared::api::code::CANNOT_SEND);
    assert!(why.contains("Go peer"), "{why}");
    d.say("for everyone").await;
    let mut seen = Vec::new();
    // Every line is one Go accepts (read_until checks), and the first
    // chat it gets is #general's.
    let got = read_until(&mut r, &mut seen, |v| v["type"] == "chat").await;
    assert_eq!(got["content"], "for everyone");
    for v in &seen {
        assert_eq!(v["room_id"], "general", "{v}");
        let line = v.to_string();
        assert!(
            !line.contains("ops only") && !line.contains("just for you"),
            "the Go peer was sent {line}"
        );
    }
    // A Go line naming another room is still #general's: Go has no other.
    let mut events = d.subscribe(None).await;
    let line = go
        .line("chat", "from go", "gopher")
        .replace(r#""room_id":"general""#, r#""room_id":"ops""#);
    w.write_all(line.as_bytes()).await.unwrap();
    let m = events.messages(1, T).await;
    assert!(
        matches!(&m[0].body, EventBody::Message { room: Some(r), .. } if r == "#general"),
        "{m:?}"
    );
}
