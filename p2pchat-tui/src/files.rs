//! The file transfer commands: `send`, `accept`, `decline`, `transfers`.
//! `send` and `accept` follow their transfer's events to its end: a
//! progress bar on a terminal, one line per change otherwise, or the
//! events themselves with `--json`.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use shared::api::{
    Call, SendParams, SubscribeParams, SubscribeResult, TransferInfo, TransferParams,
    TransferState, TransfersResult,
};
use shared::event::{Event, EventBody};
use tokio::sync::mpsc;

use crate::cli::{CommandError, emit, json};
use crate::client::{Client, ClientError};
use crate::format;

#[derive(Debug, Args)]
pub struct SendArgs {
    /// Files and folders (a folder goes with its tree)
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Whom to offer them to: a nick as `peers` shows it
    #[arg(long, value_name = "NICK")]
    pub to: String,
    /// Print the transfer's events as JSON lines instead
    #[arg(long)]
    pub json: bool,
    /// Return once the offer is made; the daemon carries on
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, Args)]
pub struct AnswerArgs {
    /// The offer's id, as `transfers` shows it
    pub id: String,
    /// Print the transfer's events as JSON lines instead
    #[arg(long)]
    pub json: bool,
    /// Return once accepted; the daemon carries on
    #[arg(long)]
    pub no_wait: bool,
}

/// `send PATH... --to NICK`.
pub(crate) async fn send(client: &Client, a: SendArgs) -> Result<(), CommandError> {
    let paths = a
        .paths
        .iter()
        .map(|p| std::path::absolute(p).map(|p| p.to_string_lossy().into_owned()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(CommandError::Stdio)?;
    let call = Call::Send(SendParams { paths, to: a.to });
    call_and_follow(client, &call, a.no_wait, a.json, |info| {
        format!(
            "offered {} to {} (id {})",
            format::transfer_what(info),
            info.nick,
            info.id
        )
    })
    .await
}

/// `accept ID`.
pub(crate) async fn accept(client: &Client, a: AnswerArgs) -> Result<(), CommandError> {
    let call = Call::Accept(TransferParams {
        id: full_id(client, a.id).await?,
    });
    call_and_follow(client, &call, a.no_wait, a.json, |info| {
        format!(
            "accepted {} from {}; it lands in {}",
            format::transfer_what(info),
            info.nick,
            info.folder.as_deref().unwrap_or("the download folder")
        )
    })
    .await
}

/// Makes `call` (`send` or `accept`), says what it did (unless a progress
/// bar will), then follows the transfer to its end unless `no_wait`.
async fn call_and_follow(
    client: &Client,
    call: &Call,
    no_wait: bool,
    as_json: bool,
    said: impl Fn(&TransferInfo) -> String,
) -> Result<(), CommandError> {
    // Subscribed first: no event of the transfer comes before we listen.
    let events = if no_wait {
        None
    } else {
        Some(watch(client).await?)
    };
    let info: TransferInfo = client.call(call).await?;
    if as_json {
        emit(&(json(&info)? + "\n"))?;
    } else if no_wait || !std::io::stderr().is_terminal() {
        emit(&(said(&info) + "\n"))?;
    }
    match events {
        Some(events) => follow(events, info, as_json).await,
        None => Ok(()),
    }
}

/// `decline ID`.
pub(crate) async fn decline(client: &Client, id: String) -> Result<(), CommandError> {
    let id = full_id(client, id).await?;
    let info: TransferInfo = client.call(&Call::Decline(TransferParams { id })).await?;
    emit(&format!(
        "declined {} from {}\n",
        format::transfer_what(&info),
        info.nick
    ))
}

/// `cancel ID`.
pub(crate) async fn cancel(client: &Client, id: String) -> Result<(), CommandError> {
    let id = full_id(client, id).await?;
    let info: TransferInfo = client.call(&Call::Cancel(TransferParams { id })).await?;
    emit(&format!("{}\n", format::transfer_line(&info)))
}

/// An id as typed: the start of one will do, when it is the only one.
async fn full_id(client: &Client, id: String) -> Result<String, CommandError> {
    if shared::transfer::valid_id(&id) {
        return Ok(id);
    }
    let r: TransfersResult = client.call(&Call::Transfers).await?;
    let mut matching = r
        .transfers
        .into_iter()
        .filter(|t| !t.state.is_over() && t.id.starts_with(&id.to_ascii_lowercase()));
    match (matching.next(), matching.next()) {
        (Some(t), None) => Ok(t.id),
        (None, _) => Err(CommandError::Failed(format!(
            "no transfer under way has an id starting {id:?}"
        ))),
        (Some(_), Some(_)) => Err(CommandError::Failed(format!(
            "{id:?} starts the ids of several transfers; give more of it"
        ))),
    }
}

/// `transfers [--json]`.
pub(crate) async fn list(client: &Client, as_json: bool) -> Result<(), CommandError> {
    let r: TransfersResult = client.call(&Call::Transfers).await?;
    if as_json {
        emit(&(json(&r.transfers)? + "\n"))
    } else {
        emit(&format::transfers_table(&r.transfers))
    }
}

/// Events from now on, transfers' among them.
async fn watch(client: &Client) -> Result<mpsc::Receiver<Event>, CommandError> {
    let events = client
        .take_events()
        .ok_or_else(|| CommandError::Failed("event stream already taken".into()))?;
    let _: SubscribeResult = client
        .call(&Call::Subscribe(SubscribeParams::default()))
        .await?;
    Ok(events)
}

/// Follows transfer `info` to its end.
async fn follow(
    mut events: mpsc::Receiver<Event>,
    info: TransferInfo,
    as_json: bool,
) -> Result<(), CommandError> {
    let bar = (!as_json && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new(info.bytes);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg}\n[{bar:40.cyan/blue}] {bytes}/{total_bytes} {bytes_per_sec} {eta} left",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(format::transfer_line(&info));
        bar
    });
    let mut last = info.state;
    while let Some(e) = events.recv().await {
        let EventBody::Transfer(t) = &e.body else {
            continue;
        };
        if t.id != info.id {
            continue;
        }
        if as_json {
            emit(&(json(&e)? + "\n"))?;
        }
        if let Some(bar) = &bar {
            bar.set_position(t.done);
            bar.set_message(format::transfer_line(t));
        } else if !as_json && t.state != last {
            emit(&(format::transfer_line(t) + "\n"))?;
        }
        last = t.state;
        match t.state {
            TransferState::Done => {
                if let Some(bar) = &bar {
                    bar.finish();
                }
                return Ok(());
            }
            TransferState::Failed | TransferState::Declined => {
                if let Some(bar) = &bar {
                    bar.abandon();
                }
                return Err(CommandError::Failed(format::transfer_line(t)));
            }
            _ => {}
        }
    }
    Err(CommandError::Client(ClientError::Disconnected))
}
