//! One agent's fd-3 connection: read newline-delimited requests under a line
//! cap, run each as its own task (so blocking calls do not hold up the
//! rest), and write replies in whatever order they finish. Calls that
//! neither block nor change anything (those the syscall table marks
//! `inline`: GETPID, AGENT_INFO, PS) are answered on the connection's own
//! task, without a task of their own.
//!
//! Back-pressure keeps memory flat under a flood: at most `max_in_flight`
//! requests run at once; while all slots are busy the daemon stops reading
//! and the agent's writes block in its socket buffer. Replies are bounded
//! in bytes too: a reply waits for room in the connection's
//! `reply_bytes_in_flight` budget before it is queued for the writer (which
//! gives the room back once the bytes are in the socket), a RECV_MSG or
//! SYS_READ_STDIN reserves room for its largest reply (`recv_reply_bytes`)
//! before it reads the queue, and the daemon reads no further request while
//! the budget is used up. An agent that does not read its replies therefore
//! holds at most that many bytes of them in the daemon; no reply is dropped.

use super::Kernel;
use super::pcb::Pid;
use crate::abi::calls::Call;
use crate::abi::wire::{Reply, parse_request};
use crate::abi::{Errno, SysError};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};

/// Replies smaller than this are not charged to the reply budget (at most
/// `max_in_flight` of them can wait, and SYS_EXIT or GETPID must never wait
/// behind a bulk reply).
const SMALL_REPLY: usize = 64 * 1024;

/// A reply line, whether it answers SYS_EXIT, and its room in the budget.
type Queued = (Vec<u8>, bool, Option<Room>);

/// The bytes of replies one connection may hold: room is taken from a
/// semaphore of `cap` permits; `queued` counts the bytes of replies
/// handed to the writer and not yet written, which gates the reader.
struct ReplyBudget {
    sem: Arc<Semaphore>,
    cap: usize,
    queued: AtomicUsize,
    drained: Notify,
}

/// Room a reply holds in the budget until it is written.
struct Room {
    permit: OwnedSemaphorePermit,
    budget: Arc<ReplyBudget>,
}

impl Drop for Room {
    fn drop(&mut self) {
        self.budget
            .queued
            .fetch_sub(self.permit.num_permits(), Ordering::Relaxed);
        self.budget.drained.notify_waiters();
    }
}

impl ReplyBudget {
    fn new(cap: u64) -> Self {
        let cap = usize::try_from(cap)
            .unwrap_or(usize::MAX)
            .clamp(SMALL_REPLY, Semaphore::MAX_PERMITS);
        ReplyBudget {
            sem: Arc::new(Semaphore::new(cap)),
            cap,
            queued: AtomicUsize::new(0),
            drained: Notify::new(),
        }
    }

    /// Room for `bytes` (at most the whole budget); waits while it is used.
    async fn room(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let n = u32::try_from(bytes.min(self.cap)).unwrap_or(u32::MAX);
        self.sem.clone().acquire_many_owned(n).await.ok()
    }

    /// The room a reply of `len` bytes needs, given what was reserved;
    /// counted as queued until the returned [`Room`] is dropped.
    async fn settle(
        self: &Arc<Self>,
        len: usize,
        reserved: Option<OwnedSemaphorePermit>,
    ) -> Option<Room> {
        let need = len.min(self.cap);
        let permit = match reserved {
            Some(mut r) if r.num_permits() >= need => {
                if need < SMALL_REPLY {
                    return None;
                }
                let extra = r.num_permits() - need;
                if extra > 0 {
                    drop(r.split(extra));
                }
                r
            }
            Some(mut r) => {
                let more = self.room(need - r.num_permits()).await?;
                r.merge(more);
                r
            }
            None if len < SMALL_REPLY => return None,
            None => self.room(need).await?,
        };
        self.queued
            .fetch_add(permit.num_permits(), Ordering::Relaxed);
        Some(Room {
            permit,
            budget: self.clone(),
        })
    }

    /// Waits while the replies queued and not written fill the budget (the
    /// reader's gate; room only reserved does not close it).
    async fn wait_drained(&self) {
        loop {
            let drained = self.drained.notified();
            if self.queued.load(Ordering::Relaxed) < self.cap {
                return;
            }
            drained.await;
        }
    }
}

/// Outcome of reading one line.
enum Line {
    Complete(Vec<u8>),
    /// A line exceeded the cap; it was dropped up to its newline (or EOF).
    TooLong,
    Eof,
}

/// Reads one line of at most `cap` bytes; an oversized line is answered as
/// soon as it passes the cap (`on_overflow`) and then skipped.
async fn read_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    cap: usize,
    mut on_overflow: impl FnMut(),
) -> std::io::Result<Line> {
    buf.clear();
    let mut discarding = false;
    loop {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            return Ok(Line::Eof);
        }
        if let Some(i) = avail.iter().position(|&b| b == b'\n') {
            if !discarding && buf.len() + i <= cap {
                buf.extend_from_slice(&avail[..i]);
            } else if !discarding {
                on_overflow();
                discarding = true;
            }
            r.consume(i + 1);
            return Ok(if discarding {
                Line::TooLong
            } else {
                Line::Complete(std::mem::take(buf))
            });
        }
        let n = avail.len();
        if !discarding {
            if buf.len() + n > cap {
                buf.clear();
                buf.shrink_to(64 * 1024);
                discarding = true;
                on_overflow();
            } else {
                buf.extend_from_slice(avail);
            }
        }
        r.consume(n);
    }
}

/// How long an agent whose SYS_EXIT was answered may take to exit by itself.
const EXIT_GRACE: std::time::Duration = std::time::Duration::from_millis(250);

/// Most reply bytes gathered into one write.
const WRITE_BATCH: usize = 64 * 1024;

/// Serves the agent until it closes its socket.
pub async fn serve(k: Arc<Kernel>, pid: Pid, stream: UnixStream) {
    let (rd, mut wr) = stream.into_split();
    // Reply lines, each marked when it answers SYS_EXIT.
    let (tx, mut rx) = mpsc::channel::<Queued>(k.config.max_in_flight.max(1));
    let ender = k.clone();
    let writer = tokio::spawn(async move {
        while let Some((mut out, mut exits, permit)) = rx.recv().await {
            let mut permits = vec![permit];
            // Replies that finished meanwhile go out in the same write.
            while out.len() < WRITE_BATCH {
                match rx.try_recv() {
                    Ok((line, exit, permit)) => {
                        out.extend_from_slice(&line);
                        exits |= exit;
                        permits.push(permit);
                    }
                    Err(_) => break,
                }
            }
            let written = wr.write_all(&out).await;
            // The bytes are in the socket: their room is free again.
            drop(out);
            drop(permits);
            // The agent's SYS_EXIT is answered: it may still exit by
            // itself for a moment, then it is ended.
            if exits
                && let Some(live) = ender.live.get(pid)
                && let Some(reason) = live.take_exit()
            {
                let k = ender.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(EXIT_GRACE).await;
                    // Only if it is still the same live agent (not ended,
                    // its pid not reaped and perhaps reused).
                    if k.live.get(pid).is_some_and(|l| Arc::ptr_eq(&l, &live)) {
                        live.kill(&reason);
                    }
                });
            }
            if written.is_err() {
                break;
            }
        }
    });

    let slots = Arc::new(Semaphore::new(k.config.max_in_flight.max(1)));
    let limits = k.table.get(pid).map(|p| p.limits);
    let budget = Arc::new(ReplyBudget::new(
        limits.map_or(crate::abi::limits::DEFAULT_REPLY_BYTES_IN_FLIGHT, |l| {
            l.reply_bytes_in_flight
        }),
    ));
    let recv_reply = limits.map_or(crate::abi::limits::DEFAULT_RECV_REPLY_BYTES, |l| {
        l.recv_reply_bytes
    });
    // Small: one buffer per live agent (a line longer than this is still
    // assembled up to the line cap).
    let mut reader = BufReader::with_capacity(8 * 1024, rd);
    let mut buf = Vec::new();
    let mut limiter = RateLimiter::new(limits.map_or(0, |l| l.syscalls_per_s));
    let cap = k.config.line_cap;
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        // Replies the agent does not read stop the reading of requests.
        budget.wait_drained().await;
        let overflow_tx = tx.clone();
        let line = read_line(&mut reader, &mut buf, cap, || {
            let reply = Reply::error(
                Value::Null,
                SysError::new(
                    Errno::EMSGSIZE,
                    format!("request line longer than {cap} bytes; the line is dropped"),
                ),
            );
            let _ = overflow_tx.try_send((reply.to_line(), false, None));
        })
        .await;
        match line {
            Ok(Line::Complete(bytes)) => {
                let req = match parse_request(&bytes) {
                    Ok(r) => r,
                    Err(reply) => {
                        k.table.count(pid, |p| p.counters.syscalls += 1);
                        let _ = tx.send((reply.to_line(), false, None)).await;
                        continue;
                    }
                };
                if !limiter.admit() {
                    let reply = Reply::error(
                        req.id,
                        SysError::new(Errno::EAGAIN, "syscall rate limit exceeded; slow down"),
                    );
                    let _ = tx.send((reply.to_line(), false, None)).await;
                    continue;
                }
                let n = bytes.len() as u64 + 1;
                let call = Call::parse(&req.call);
                // Inline calls neither block nor wait for the group commit
                // (unless refused, which PS may be).
                if call.is_some_and(Call::answered_inline) {
                    let line = super::dispatch::dispatch(&k, pid, req).await.to_line();
                    count_bytes(&k, pid, n, &line);
                    let room = budget.settle(line.len(), None).await;
                    let _ = tx.send((line, false, room)).await;
                    drop(permit);
                    continue;
                }
                let k = k.clone();
                let tx = tx.clone();
                let budget = budget.clone();
                let exits = call == Some(Call::SYS_EXIT);
                let bulk = matches!(call, Some(Call::RECV_MSG | Call::SYS_READ_STDIN));
                tokio::spawn(async move {
                    // Room for the largest reply before the queue is read.
                    let reserved = if bulk {
                        budget
                            .room(usize::try_from(recv_reply).unwrap_or(usize::MAX))
                            .await
                    } else {
                        None
                    };
                    let line = super::dispatch::dispatch(&k, pid, req).await.to_line();
                    count_bytes(&k, pid, n, &line);
                    let room = budget.settle(line.len(), reserved).await;
                    let _ = tx.send((line, exits, room)).await;
                    drop(permit);
                });
            }
            Ok(Line::TooLong) => continue,
            Ok(Line::Eof) | Err(_) => break,
        }
    }
    drop(tx);
    let _ = writer.await;
}

fn count_bytes(k: &Kernel, pid: Pid, bytes_in: u64, reply: &[u8]) {
    k.table.count(pid, |p| {
        p.counters.bytes_in += bytes_in;
        p.counters.bytes_out += reply.len() as u64;
    });
}

/// A token bucket admitting `rate` calls per second (0 = unlimited) with a
/// burst of one second's worth.
struct RateLimiter {
    rate: f64,
    tokens: f64,
    last: std::time::Instant,
}

impl RateLimiter {
    fn new(rate: u64) -> Self {
        RateLimiter {
            rate: rate as f64,
            tokens: rate as f64,
            last: std::time::Instant::now(),
        }
    }

    fn admit(&mut self) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let now = std::time::Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.rate);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8], cap: usize) -> (Vec<String>, usize) {
        let mut r = BufReader::with_capacity(7, input);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        let mut overflows = 0;
        loop {
            match read_line(&mut r, &mut buf, cap, || overflows += 1).await {
                Ok(Line::Complete(l)) => out.push(String::from_utf8_lossy(&l).into_owned()),
                Ok(Line::TooLong) => out.push("<too long>".into()),
                Ok(Line::Eof) | Err(_) => break,
            }
        }
        (out, overflows)
    }

    #[tokio::test]
    async fn splits_lines_and_drops_oversized_ones() {
        let (out, overflows) = lines(b"abc\nthis line is too long\nok\n", 10).await;
        assert_eq!(out, vec!["abc", "<too long>", "ok"]);
        assert_eq!(overflows, 1);
    }

    #[tokio::test]
    async fn a_line_of_exactly_the_cap_passes() {
        let (out, overflows) = lines(b"0123456789\n01234567890\n", 10).await;
        assert_eq!(out, vec!["0123456789", "<too long>"]);
        assert_eq!(overflows, 1);
    }

    #[test]
    fn rate_limiter_admits_a_burst_then_refuses() {
        let mut r = RateLimiter::new(5);
        let admitted = (0..20).filter(|_| r.admit()).count();
        assert!((5..=6).contains(&admitted), "admitted {admitted}");
        let mut unlimited = RateLimiter::new(0);
        assert!((0..1000).all(|_| unlimited.admit()));
    }
}
