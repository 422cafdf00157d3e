//! Kernel receive timestamps for TCP connections (`SO_TIMESTAMPNS`): `StampedTcp` wraps a
//! tokio `TcpStream`, reads with `recvmsg` and keeps the kernel's receive time of the latest
//! bytes read in an `RxClock` that the connection's user can read at any moment.
//!
//! Why: a time taken with `Instant::now()` when the event loop gets to a read includes
//! however long the loop was busy with other connections. When 300 streams get a token in
//! the same engine step, the last of them is read a few milliseconds after it arrived. The
//! kernel stamps each packet when it is received, so the load generator's chunk times and the
//! simulator's arrival times do not depend on how busy either process is.
//!
//! For TCP the kernel reports, per `recvmsg`, the time of the last packet the read consumed.
//! A read that got no stamp (timestamping is switched on lazily by the kernel, so the first
//! packets after `setsockopt` may come without) empties the clock; users fall back to their
//! own clock then (`RxClock::instant`). It does not stamp writes.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// The kernel receive time (ns since the Unix epoch) of the latest bytes read on one
/// connection; 0 until a stamped read happened. Cheap to clone and read from another task.
#[derive(Debug, Clone, Default)]
pub struct RxClock(Arc<AtomicU64>);

impl RxClock {
    /// The latest receive time, ns since the Unix epoch, if any read was stamped.
    pub fn unix_ns(&self) -> Option<u64> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(ns),
        }
    }

    /// The latest receive time on the monotonic clock, or `now` when there is none. The
    /// kernel stamps with the wall clock; the conversion takes how long ago that was by the
    /// wall clock and goes back as far on the monotonic one. A stamp in the future (a wall
    /// clock step) or older than `not_before` is not trusted: `now` or `not_before` it is.
    pub fn instant(&self, now: Instant, not_before: Instant) -> Instant {
        let Some(ns) = self.unix_ns() else { return now };
        let wall = unix_ns_now();
        let ago = Duration::from_nanos(wall.saturating_sub(ns));
        now.checked_sub(ago).map_or(not_before, |t| t.max(not_before))
    }

    fn set(&self, ns: u64) {
        self.0.store(ns, Ordering::Relaxed);
    }
}

/// Now, in ns since the Unix epoch (the kernel's stamps are on this clock).
pub fn unix_ns_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// A TCP stream whose reads record the kernel's receive time in an `RxClock`.
#[derive(Debug)]
pub struct StampedTcp {
    inner: TcpStream,
    clock: RxClock,
}

impl StampedTcp {
    /// Switches receive timestamps on. Where the kernel refuses, the stream still works and
    /// its clock stays empty (callers then use their own time).
    pub fn new(inner: TcpStream) -> Self {
        let on: libc::c_int = 1;
        // SAFETY: a valid socket fd owned by `inner`, and a c_int option value whose size is
        // passed along, as setsockopt(2) wants.
        let rc = unsafe {
            libc::setsockopt(
                inner.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            tracing::debug!("SO_TIMESTAMPNS refused: {}", io::Error::last_os_error());
        }
        Self { inner, clock: RxClock::default() }
    }

    /// The clock of this connection's reads.
    pub fn clock(&self) -> RxClock {
        self.clock.clone()
    }

    pub fn get_ref(&self) -> &TcpStream {
        &self.inner
    }
}

/// One `recvmsg` into `dst`; returns the bytes read and the kernel's receive time, if given.
fn recv_stamped(fd: RawFd, dst: &mut [MaybeUninit<u8>]) -> io::Result<(usize, Option<u64>)> {
    let mut iov = libc::iovec { iov_base: dst.as_mut_ptr().cast(), iov_len: dst.len() };
    // Room for one SCM_TIMESTAMPNS message (CMSG_SPACE(16) = 32 bytes), u64-aligned.
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: `msg` points at `iov` (describing `dst`, writable for its length; the kernel
    // only writes bytes, so uninitialised memory is fine) and at `control`, both alive for
    // the call.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut stamp = None;
    // SAFETY: `msg` was filled by recvmsg; the CMSG_* walk stays within msg_controllen, and
    // the data of an SCM_TIMESTAMPNS message is one timespec (read unaligned to be safe).
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                stamp = Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, stamp))
}

impl AsyncRead for StampedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let fd = this.inner.as_raw_fd();
        loop {
            ready!(this.inner.poll_read_ready(cx))?;
            // SAFETY: recv_stamped only writes into the unfilled part, and `assume_init` below
            // covers exactly the `n` bytes the kernel wrote.
            let dst = unsafe { buf.unfilled_mut() };
            match this.inner.try_io(Interest::READABLE, || recv_stamped(fd, dst)) {
                Ok((n, stamp)) => {
                    // SAFETY: the kernel wrote `n` bytes at the start of the unfilled part.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    // An unstamped read makes the clock unknown rather than leaving an older stamp.
                    this.clock.set(stamp.unwrap_or(0));
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for StampedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn reads_carry_the_kernel_receive_time_not_the_read_time() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let mut server = StampedTcp::new(server);
        let clock = server.clock();
        let mut buf = [0u8; 64];
        // The kernel may switch timestamping on a moment after setsockopt: the first
        // exchanges may come unstamped, and then the clock must stay empty.
        let mut stamped = None;
        for _ in 0..50 {
            let sent = unix_ns_now();
            client.write_all(b"hello").await.unwrap();
            // Let the bytes sit in the socket: the stamp must not move with the read.
            tokio::time::sleep(Duration::from_millis(30)).await;
            let n = server.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"hello");
            let read_at = unix_ns_now();
            if let Some(ns) = clock.unix_ns() {
                stamped = Some((sent, ns, read_at));
                break;
            }
        }
        let (sent, ns, read_at) = stamped.expect("the kernel never stamped a read");
        assert!(ns >= sent, "stamp {ns} before the send {sent}");
        assert!(read_at - ns >= 25_000_000, "stamp taken at the read, not on receipt");
        let now = Instant::now();
        let t = clock.instant(now, now - Duration::from_secs(1));
        let ago = now - t;
        assert!(ago >= Duration::from_millis(25) && ago < Duration::from_millis(500), "{ago:?}");
        // Writes pass through.
        server.write_all(b"back").await.unwrap();
        let n = client.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"back");
    }

    #[test]
    fn an_empty_clock_gives_now_and_bad_stamps_are_clamped() {
        let now = Instant::now();
        let floor = now - Duration::from_secs(1);
        let c = RxClock::default();
        assert_eq!(c.instant(now, floor), now);
        c.set(1); // 1970: far older than the floor
        assert_eq!(c.instant(now, floor), floor);
        c.set(unix_ns_now() + 60_000_000_000); // a minute in the future
        assert_eq!(c.instant(now, floor), now);
    }
}
