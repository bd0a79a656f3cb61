//! Child processes of tools (shell, claude_code) run where they cannot see the worker: a new
//! PID namespace with its own /proc (the worker's environment, command line and memory are not
//! there), a new mount namespace with a private /tmp, and no capability to undo either.
//!
//! Namespaces are entered with `unshare(2)` through `libc` in a `pre_exec` hook (no bubblewrap
//! needed): the hook forks once so the command becomes the namespace's first process, and the
//! intermediate process waits for it and exits as it did. When not root, a user namespace
//! mapping the worker's own user is created too.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// How the worker runs its tools' child processes, decided once at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Sandbox {
    /// New PID and mount namespaces for every child process.
    Namespaces,
    /// As the worker's children, seeing what it sees (`--unsandboxed-tools`).
    Unsandboxed,
    /// Namespaces cannot be created here: child-process tools are refused.
    #[default]
    Unavailable,
}

/// Capabilities the sandbox's processes never get back, even as root: with them a command
/// could unmount its /proc, enter other namespaces or read other processes.
/// (CAP_SYS_MODULE, CAP_SYS_RAWIO, CAP_SYS_CHROOT, CAP_SYS_PTRACE, CAP_SYS_ADMIN from
/// linux/capability.h; libc does not name them.)
const DROPPED_CAPS: &[libc::c_int] = &[16, 17, 18, 19, 21];

impl Sandbox {
    /// Namespaces when they work on this host (tried with `true`), else unavailable; or
    /// unsandboxed when the operator asked for it.
    pub fn probe(unsandboxed: bool) -> Sandbox {
        if unsandboxed {
            return Sandbox::Unsandboxed;
        }
        let mut cmd = std::process::Command::new("true");
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        match Plan::new(None, &[]) {
            Ok(plan) => {
                // SAFETY: the hook only makes async-signal-safe system calls (see `Plan::enter`).
                unsafe {
                    std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || plan.enter());
                }
                match cmd.status() {
                    Ok(s) if s.success() => Sandbox::Namespaces,
                    _ => Sandbox::Unavailable,
                }
            }
            Err(_) => Sandbox::Unavailable,
        }
    }

    /// A command for `program` with an empty environment, its own process group (so stopping
    /// it stops what it started), killed when dropped, in `working_dir`, inside the sandbox;
    /// `keep` are files it needs that may be under /tmp (at most two).
    pub fn command(
        &self,
        program: &Path,
        working_dir: Option<&str>,
        keep: &[&Path],
    ) -> Result<tokio::process::Command, String> {
        let mut cmd = tokio::process::Command::new(program);
        cmd.env_clear().process_group(0).kill_on_drop(true);
        if let Some(dir) = working_dir {
            cmd.current_dir(dir);
        }
        match self {
            Sandbox::Unsandboxed => {}
            Sandbox::Unavailable => {
                return Err(
                    "tools that start processes are disabled: this host cannot create namespaces \
                            for their sandbox (the worker's operator can start it with --unsandboxed-tools)"
                        .into(),
                );
            }
            Sandbox::Namespaces => {
                let dir = match working_dir {
                    Some(d) => Some(std::path::absolute(d).map_err(|e| format!("bad working directory: {e}"))?),
                    None => std::env::current_dir().ok(),
                };
                let plan = Plan::new(dir.as_deref(), keep).map_err(|e| format!("cannot prepare the sandbox: {e}"))?;
                // SAFETY: the hook only makes async-signal-safe system calls (see `Plan::enter`).
                unsafe {
                    cmd.pre_exec(move || plan.enter());
                }
            }
        }
        Ok(cmd)
    }
}

/// Most paths under /tmp kept visible in the private one.
const MAX_KEPT: usize = 3;

/// A path under /tmp that stays visible in the private /tmp: the directories to create there
/// (the last one is the path itself when it is a directory), and the path.
struct Kept {
    dirs: Vec<CString>,
    path: CString,
    is_dir: bool,
}

/// Everything the hook needs, allocated before the fork (nothing may allocate after it).
struct Plan {
    /// `uid_map` and `gid_map` lines when a user namespace is needed (not root).
    user_maps: Option<(CString, CString)>,
    /// The working directory first when it is under /tmp, then the files to keep.
    kept: Vec<Kept>,
    /// Whether the first kept path is the working directory (entered once bound back).
    workdir_kept: bool,
}

impl Plan {
    fn new(working_dir: Option<&Path>, files: &[&Path]) -> io::Result<Plan> {
        // SAFETY: getuid/getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let user_maps = (uid != 0)
            .then(|| Ok::<_, io::Error>((CString::new(format!("0 {uid} 1"))?, CString::new(format!("0 {gid} 1"))?)))
            .transpose()?;
        let kept_at = |path: &Path, is_dir: bool| -> io::Result<Option<Kept>> {
            let Ok(rest) = path.strip_prefix("/tmp") else {
                return Ok(None);
            };
            let mut at = std::path::PathBuf::from("/tmp");
            let mut dirs = Vec::new();
            for part in rest.components() {
                at.push(part);
                dirs.push(CString::new(at.as_os_str().as_bytes())?);
            }
            if !is_dir {
                dirs.pop();
            }
            Ok(Some(Kept {
                dirs,
                path: CString::new(path.as_os_str().as_bytes())?,
                is_dir,
            }))
        };
        let mut kept = Vec::new();
        let workdir = working_dir.map(|d| kept_at(d, true)).transpose()?.flatten();
        let workdir_kept = workdir.is_some();
        kept.extend(workdir);
        for f in files {
            kept.extend(kept_at(f, false)?);
        }
        if kept.len() > MAX_KEPT {
            return Err(io::Error::other("too many paths under /tmp to keep"));
        }
        Ok(Plan {
            user_maps,
            kept,
            workdir_kept,
        })
    }

    /// Runs in the forked child before `exec`: only async-signal-safe system calls, no
    /// allocation, no locks.
    fn enter(&self) -> io::Result<()> {
        let err = io::Error::last_os_error;
        // SAFETY: plain system calls on pointers to NUL-terminated strings owned by `self`,
        // and on locals; the intermediate process only waits and exits.
        unsafe {
            let mut flags = libc::CLONE_NEWPID | libc::CLONE_NEWNS;
            if self.user_maps.is_some() {
                flags |= libc::CLONE_NEWUSER;
            }
            if libc::unshare(flags) != 0 {
                return Err(err());
            }
            if let Some((uid_map, gid_map)) = &self.user_maps {
                write_file(c"/proc/self/setgroups", c"deny")?;
                write_file(c"/proc/self/uid_map", uid_map)?;
                write_file(c"/proc/self/gid_map", gid_map)?;
            }
            let pid = libc::fork();
            if pid < 0 {
                return Err(err());
            }
            if pid > 0 {
                // The intermediate: holds no descriptor (the spawner waits for the exec
                // report pipe to close), waits for the namespace's first process, exits as it did.
                libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
                let mut status = 0;
                loop {
                    let r = libc::waitpid(pid, &mut status, 0);
                    if r == pid {
                        break;
                    }
                    if r < 0 && *libc::__errno_location() != libc::EINTR {
                        libc::_exit(127);
                    }
                }
                if libc::WIFEXITED(status) {
                    libc::_exit(libc::WEXITSTATUS(status));
                }
                libc::_exit(128 + libc::WTERMSIG(status));
            }
            // The first process of the new PID namespace: its /proc, its /tmp.
            let none = std::ptr::null::<libc::c_char>();
            if libc::mount(
                none,
                c"/".as_ptr(),
                none,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                return Err(err());
            }
            let proc_flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
            if libc::mount(
                c"proc".as_ptr(),
                c"/proc".as_ptr(),
                c"proc".as_ptr(),
                proc_flags,
                std::ptr::null(),
            ) != 0
            {
                return Err(err());
            }
            // The paths to keep, held open (in this mount namespace, where they can be bound
            // from): the private /tmp hides them by their path.
            let mut fds = [-1; MAX_KEPT];
            for (fd, k) in fds.iter_mut().zip(&self.kept) {
                *fd = libc::open(k.path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
                if *fd < 0 {
                    return Err(err());
                }
            }
            let tmp_data = c"mode=1777".as_ptr().cast();
            let tmp_flags = libc::MS_NOSUID | libc::MS_NODEV;
            if libc::mount(
                c"tmpfs".as_ptr(),
                c"/tmp".as_ptr(),
                c"tmpfs".as_ptr(),
                tmp_flags,
                tmp_data,
            ) != 0
            {
                return Err(err());
            }
            for (fd, k) in fds.iter().zip(&self.kept) {
                for dir in &k.dirs {
                    libc::mkdir(dir.as_ptr(), 0o755);
                }
                if !k.is_dir {
                    let f = libc::open(k.path.as_ptr(), libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC, 0o600);
                    if f >= 0 {
                        libc::close(f);
                    }
                }
                // Bound from the descriptor: this /proc is the namespace's, where `self` is us.
                let mut source = *b"/proc/self/fd/\0\0\0\0\0\0\0\0\0\0\0";
                write_decimal(&mut source[14..], *fd);
                if libc::mount(
                    source.as_ptr().cast(),
                    k.path.as_ptr(),
                    none,
                    libc::MS_BIND,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(err());
                }
                libc::close(*fd);
            }
            if self.workdir_kept
                && let Some(k) = self.kept.first()
                && libc::chdir(k.path.as_ptr()) != 0
            {
                return Err(err());
            }
            for cap in DROPPED_CAPS {
                if libc::prctl(libc::PR_CAPBSET_DROP, *cap, 0, 0, 0) != 0 {
                    return Err(err());
                }
            }
            Ok(())
        }
    }
}

/// Writes `text` to `path` (procfs files), without allocating.
///
/// SAFETY: both are NUL-terminated strings.
unsafe fn write_file(path: &std::ffi::CStr, text: &std::ffi::CStr) -> io::Result<()> {
    // SAFETY: see the function's contract.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let bytes = text.to_bytes();
        let n = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
        libc::close(fd);
        if n != bytes.len() as isize {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Writes a non-negative number's digits into `out` (which stays NUL-terminated after them).
fn write_decimal(out: &mut [u8], n: libc::c_int) {
    let mut digits = [0u8; 10];
    let (mut n, mut len) = (n.max(0) as u32, 0);
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for (i, d) in digits[..len].iter().rev().enumerate() {
        out[i] = *d;
    }
}

/// Makes the worker itself unreadable to processes of its own user: no core dumps, no
/// `ptrace`, and its /proc files owned by root.
pub fn protect_worker() {
    // SAFETY: prctl(PR_SET_DUMPABLE) takes integers only.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_written_in_place() {
        let mut b = *b"/proc/self/fd/\0\0\0\0\0\0\0\0\0\0\0";
        write_decimal(&mut b[14..], 1234);
        assert_eq!(&b[..19], b"/proc/self/fd/1234\0");
    }
}
