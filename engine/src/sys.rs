//! The syscalls the engine makes itself; with `slot` (pooled futures) and the glommio
//! listener hand-over in `rt`, the only module with `unsafe`.

#![allow(unsafe_code)]

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::net::{Shutdown, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// The destination a connection had before an iptables `REDIRECT` (`SO_ORIGINAL_DST` for
/// IPv4, `IP6T_SO_ORIGINAL_DST` for IPv6). `NotFound` when the kernel has no NAT record.
pub fn original_dst(fd: RawFd, ipv6: bool) -> io::Result<SocketAddr> {
    let (level, name) = if ipv6 {
        (libc::SOL_IPV6, libc::IP6T_SO_ORIGINAL_DST)
    } else {
        (libc::SOL_IP, libc::SO_ORIGINAL_DST)
    };
    let mut storage = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `storage` is a writable sockaddr_storage of `len` bytes; the kernel writes at
    // most `len` bytes and updates `len`.
    let rc = unsafe { libc::getsockopt(fd, level, name, storage.as_mut_ptr().cast(), &mut len) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: zero-initialised and partly filled by the kernel: every bit pattern is valid.
    let storage = unsafe { storage.assume_init() };
    sockaddr_to_std(&storage)
}

/// The local address of a socket (`getsockname`).
pub fn local_addr(fd: RawFd) -> io::Result<SocketAddr> {
    let mut storage = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: as in `original_dst`.
    let rc = unsafe { libc::getsockname(fd, storage.as_mut_ptr().cast(), &mut len) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as in `original_dst`.
    let storage = unsafe { storage.assume_init() };
    sockaddr_to_std(&storage)
}

/// `shutdown(2)` on a socket the caller still owns.
pub fn shutdown(fd: RawFd, how: Shutdown) -> io::Result<()> {
    let how = match how {
        Shutdown::Read => libc::SHUT_RD,
        Shutdown::Write => libc::SHUT_WR,
        Shutdown::Both => libc::SHUT_RDWR,
    };
    // SAFETY: shutdown takes no pointers; a stale fd only yields EBADF/ENOTSOCK.
    if unsafe { libc::shutdown(fd, how) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The signal that interrupts a glommio shard's ring wait (see `rt::glommio`): the first
/// real-time signal after the ones glibc reserves, plus one.
pub fn nudge_signal() -> libc::c_int {
    libc::SIGRTMIN() + 1
}

extern "C" fn ignore_nudge(_: libc::c_int) {}

/// Installs a handler that does nothing for [`nudge_signal`], without `SA_RESTART`, so the
/// signal interrupts a blocking syscall with EINTR instead of killing the process.
pub fn install_nudge_handler() -> io::Result<()> {
    // SAFETY: a zeroed sigaction is valid; the handler is an `extern "C"` function that does
    // nothing, which is async-signal-safe.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = ignore_nudge as *const () as libc::sighandler_t;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(nudge_signal(), &action, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Sends [`nudge_signal`] to a thread of this process that has not been joined yet.
pub fn nudge(thread: libc::pthread_t) {
    // SAFETY: the caller guarantees the thread has not been joined, so its id is valid; a
    // thread that already exited yields ESRCH, which is fine.
    unsafe { libc::pthread_kill(thread, nudge_signal()) };
}

/// `SO_LINGER` with a zero timeout, so that closing the socket sends RST instead of FIN.
pub fn set_linger_zero(fd: RawFd) -> io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `linger` is a valid struct of the length passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// TCP keepalive on: the first probe after `idle` without traffic (whole seconds, at least
/// one), then one every `idle` too, as linkerd2-proxy's `TcpKeepalive::with_time` does with
/// the kernel's default interval and count.
pub fn set_tcp_keepalive(fd: RawFd, idle: std::time::Duration) -> io::Result<()> {
    let secs = libc::c_int::try_from(idle.as_secs().max(1)).unwrap_or(libc::c_int::MAX);
    set_int(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
    set_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, secs)
}

/// `TCP_USER_TIMEOUT`: how long sent data may stay unacknowledged before the kernel closes
/// the connection (milliseconds).
pub fn set_tcp_user_timeout(fd: RawFd, timeout: std::time::Duration) -> io::Result<()> {
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    set_int(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, ms)
}

fn set_int(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: `value` is a valid int of the length passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether a socket is in TCP state CLOSE: after a reset, or after both sides' FINs once
/// it has passed through TIME_WAIT (callers tell the two apart by whether they sent a FIN).
pub fn was_reset(fd: RawFd) -> bool {
    const TCP_CLOSE: u8 = 7;
    // `tcpi_state` is the first byte of `struct tcp_info`.
    let mut info = [0u8; 8];
    let mut len = info.len() as libc::socklen_t;
    // SAFETY: `info` is writable for `len` bytes; the kernel writes at most `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    rc == 0 && len >= 1 && info[0] == TCP_CLOSE
}

/// Whether a connected TCP socket's peer has closed its side (sent FIN or reset): state
/// CLOSE_WAIT, LAST_ACK, CLOSING or CLOSE. For a socket whose own side is still open.
pub fn peer_closed(fd: RawFd) -> bool {
    const TCP_CLOSE: u8 = 7;
    const TCP_CLOSE_WAIT: u8 = 8;
    const TCP_LAST_ACK: u8 = 9;
    const TCP_CLOSING: u8 = 11;
    let mut info = [0u8; 8];
    let mut len = info.len() as libc::socklen_t;
    // SAFETY: `info` is writable for `len` bytes; the kernel writes at most `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    rc == 0
        && len >= 1
        && matches!(
            info[0],
            TCP_CLOSE | TCP_CLOSE_WAIT | TCP_LAST_ACK | TCP_CLOSING
        )
}

/// Copies up to `buf.len()` bytes that are waiting on the socket without consuming them
/// (`recv` with `MSG_PEEK | MSG_DONTWAIT`).
pub fn peek(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    recv(fd, buf, libc::MSG_PEEK | libc::MSG_DONTWAIT)
}

/// Whether an idle connection can still carry a request: nothing to read and no end of
/// stream, checked without blocking (`recv` with `MSG_PEEK | MSG_DONTWAIT`). A server that
/// closed its idle connection, or sent bytes nobody asked for, makes it unusable.
pub fn is_idle_and_open(fd: RawFd) -> bool {
    matches!(peek(fd, &mut [0u8]), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// Receives what `fd` has, up to `buf.len()` bytes, without blocking (`MSG_DONTWAIT`).
pub fn recv_nonblocking(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    recv(fd, buf, libc::MSG_DONTWAIT)
}

/// `recv(2)` into `buf` with `flags`.
fn recv(fd: RawFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: `buf` is writable for its length; a stale fd only yields an error.
    let rc = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), flags) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc as usize)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: `limit` is a valid rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}

fn sockaddr_to_std(storage: &libc::sockaddr_storage) -> io::Result<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: ss_family says this storage holds a sockaddr_in, which it is large
            // and aligned enough for.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Ok(SocketAddr::V4(SocketAddrV4::new(
                u32::from_be(sin.sin_addr.s_addr).into(),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            Ok(SocketAddr::V6(SocketAddrV6::new(
                sin6.sin6_addr.s6_addr.into(),
                u16::from_be(sin6.sin6_port),
                u32::from_be(sin6.sin6_flowinfo),
                sin6.sin6_scope_id,
            )))
        }
        family => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected address family {family}"),
        )),
    }
}

/// A pipe whose two ends are non-blocking and close-on-exec: `(read end, write end, the
/// bytes it holds)`.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd, usize)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors the kernel writes.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just opened and are owned by nobody else.
    let (rx, tx) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on the descriptor just opened.
    let size = unsafe { libc::fcntl(fds[0], libc::F_GETPIPE_SZ) };
    if size <= 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((rx, tx, size as usize))
}

/// Moves up to `len` bytes from `from` to `to` inside the kernel (`splice(2)`); one of them
/// must be a pipe. `SPLICE_F_NONBLOCK` keeps the pipe from blocking, and the socket must be
/// non-blocking ([`set_nonblocking`]) for it not to: then an empty source or a full
/// destination is `WouldBlock`. `Ok(0)` is the end of a socket's stream.
pub fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: null offsets (the files' own positions, which sockets and pipes do not have);
    // stale descriptors only yield an error.
    let rc = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc as usize)
}

/// Sets `O_NONBLOCK` on `fd`.
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an fd the caller owns; a stale fd only yields an error.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::O_NONBLOCK != 0 {
        return Ok(());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends what of `buf` the socket takes without blocking (`MSG_DONTWAIT`, and no SIGPIPE).
pub fn send_nonblocking(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is readable for its length; a stale fd only yields an error.
    let rc = unsafe {
        libc::send(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc as usize)
}

/// Gives the free pages inside the heap back to the kernel (glibc's `malloc_trim`, which
/// unlike the allocator's own trimming looks past the top of each arena). `false` where the
/// C library has no such call or nothing was given back.
pub fn trim_heap() -> bool {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: no arguments but a size; glibc locks each arena while it trims it.
        unsafe { libc::malloc_trim(0) != 0 }
    }
    #[cfg(not(target_env = "gnu"))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn local_addr_matches_std() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(
            local_addr(listener.as_raw_fd()).unwrap(),
            listener.local_addr().unwrap()
        );
        let listener = std::net::TcpListener::bind("[::1]:0").unwrap();
        assert_eq!(
            local_addr(listener.as_raw_fd()).unwrap(),
            listener.local_addr().unwrap()
        );
    }

    #[test]
    fn original_dst_without_nat_is_the_local_address_or_enoent() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        // Without a NAT rule there is nothing to undo: the kernel answers with the
        // untranslated local address when conntrack tracks the connection, and ENOENT when
        // it does not (no conntrack module loaded). Anything else is wrong.
        match original_dst(accepted.as_raw_fd(), false) {
            Ok(addr) => assert_eq!(addr, listener.local_addr().unwrap()),
            Err(error) => assert_eq!(error.raw_os_error(), Some(libc::ENOENT)),
        }
    }
}
