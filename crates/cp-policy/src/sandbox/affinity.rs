//! Keeps a round trip to a child on the caller's CPU. A pipe wake-up that lands on another,
//! idle CPU costs tens of µs on a VM (the idle vCPU has to be interrupted out of halt), more
//! than a whole decision; on one CPU it is a context switch of a few µs. So the child is
//! moved to the caller's CPU, and the caller yields that CPU to it rather than sleeping.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Moves process `pid` to the CPU this thread runs on, unless it is there (`at`) already.
/// Answers where it is now; where moving is refused (a cpuset without that CPU) it stays put.
#[cfg(target_os = "linux")]
pub(super) fn follow_caller(pid: u32, at: Option<i32>) -> Option<i32> {
    // SAFETY: plain syscalls, on a CPU set owned and zeroed here.
    let cpu = unsafe { libc::sched_getcpu() };
    if cpu < 0 || at == Some(cpu) {
        return at;
    }
    let moved = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        libc::sched_setaffinity(pid as libc::pid_t, size_of::<libc::cpu_set_t>(), &set) == 0
    };
    if moved { Some(cpu) } else { at }
}

#[cfg(not(target_os = "linux"))]
pub(super) fn follow_caller(_pid: u32, at: Option<i32>) -> Option<i32> {
    at
}

/// Until `fd` is readable or `budget` is spent, yields the CPU (to the child, queued on it)
/// instead of sleeping, so the reply needs no wake-up. The caller then reads as usual.
pub(super) fn spin_until_readable(fd: &impl AsRawFd, budget: Duration) {
    let started = Instant::now();
    let mut poll = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    while started.elapsed() < budget {
        // SAFETY: one pollfd that lives across the call; a zero timeout never blocks.
        if unsafe { libc::poll(&mut poll, 1, 0) } != 0 {
            return;
        }
        std::thread::yield_now();
    }
}
