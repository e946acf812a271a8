package spool

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// lock makes sure no other daemon uses the spool while this one does.
//
// The lock is an flock(2) on the spool directory itself, held for the
// spool's life. A lock on a file in it (.lock, as earlier versions did) is
// gone with the file: after `rm .lock` a second daemon started, and the two
// lost and damaged acknowledged objects between them. A directory cannot be
// removed while it holds the spool, and every path to it (a symlink, a bind
// mount, a relative path) opens the same inode, whose lock the second
// daemon meets.
//
// .lock is kept, and flocked too: a daemon of an earlier version, which
// knows only that lock, is refused as well (and refuses us). It holds the
// PID of the daemon that last held the spool, for operators; removing it
// breaks nothing.
func (s *Spool) lock() error {
	d, err := os.OpenFile(s.root, os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	if err := unix.Flock(int(d.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			pid := lockHolder(d)
			d.Close()
			return s.inUse(pid)
		}
		// A file system that cannot lock a directory opened for reading
		// (NFS emulates flock with byte-range locks, which need a file
		// opened for writing): .lock alone guards the spool there.
		s.log.Warn("cannot lock the spool directory itself; only .lock guards it: do not remove .lock while the daemon runs", "dir", s.root, "err", err)
		d.Close()
	} else {
		s.locks = append(s.locks, d)
	}
	f, err := os.OpenFile(filepath.Join(s.root, lockFile), os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		s.unlock()
		return fmt.Errorf("spool: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		pid := lockHolder(f)
		if pid == 0 {
			pid = recordedPID(f)
		}
		f.Close()
		s.unlock()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return s.inUse(pid)
		}
		return fmt.Errorf("spool: locking %s: %w", filepath.Join(s.root, lockFile), err)
	}
	s.locks = append(s.locks, f)
	// For operators only: a failure here costs nothing but the record.
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return nil
}

func (s *Spool) inUse(pid int) error {
	holder := "pid unknown"
	if pid > 0 {
		holder = "pid " + strconv.Itoa(pid)
	}
	return fmt.Errorf("spool: %s is in use by another dicomgw (%s)", s.root, holder)
}

// unlock releases what lock took.
func (s *Spool) unlock() {
	for _, f := range s.locks {
		f.Close()
	}
	s.locks = nil
}

// lockHolder finds the process holding an flock on f's inode in
// /proc/locks; 0 when it cannot tell (another PID namespace, no /proc).
func lockHolder(f *os.File) int {
	fi, err := f.Stat()
	if err != nil {
		return 0
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0
	}
	// "1: FLOCK  ADVISORY  WRITE 1234 fd:00:5678 0 EOF": the device's major
	// and minor numbers in hexadecimal, then the inode; waiters ("->")
	// hold nothing.
	want := fmt.Sprintf("%02x:%02x:%d", unix.Major(uint64(st.Dev)), unix.Minor(uint64(st.Dev)), st.Ino)
	locks, err := os.Open("/proc/locks")
	if err != nil {
		return 0
	}
	defer locks.Close()
	sc := bufio.NewScanner(locks)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[1] != "FLOCK" || fields[5] != want {
			continue
		}
		if pid, err := strconv.Atoi(fields[4]); err == nil && pid > 0 {
			return pid
		}
	}
	return 0
}

// recordedPID reads the PID a daemon wrote into .lock; 0 if none.
func recordedPID(f *os.File) int {
	b := make([]byte, 32)
	n, _ := f.ReadAt(b, 0)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b[:n])))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}
