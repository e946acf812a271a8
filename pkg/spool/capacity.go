package spool

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ErrFull is wrapped when the spool cannot take an object: it is above its
// high-water mark, or the object does not fit in what is left. The sender
// should be told A700 (out of resources) and try again later.
var ErrFull = errors.New("spool: full")

// The marks. MaxBytes is a hard limit no object may pass; the spool stops
// taking new objects (associations, C-STOREs) at the high-water mark, 95%
// of it, so that objects already coming in can finish, and takes them again
// below the low-water mark, 90%, so that a spool at its limit does not flap.
// For free space: no new objects below MinFree, none may pass MinFree/2,
// new ones again above MinFree/0.9.
const (
	highRatio   = 0.95
	resumeRatio = 0.9
)

// freeCheckEvery bounds how much an object may be written between two
// checks of the file system's free space.
const freeCheckEvery = 64 << 20

// Limits are the spool's capacity bounds.
type Limits struct {
	MaxBytes int64 // the most the spool may hold; 0: no limit
	MinFree  int64 // free bytes to leave on the spool's file system
}

// capacity knows how many bytes the spool holds (all states, and objects
// being received), keeps it up to date as objects come and go, and decides
// with hysteresis whether the spool may take more.
type capacity struct {
	limits Limits
	dir    string
	log    *slog.Logger

	used atomic.Int64 // bytes held

	mu     sync.Mutex
	full   bool
	reason string
	since  time.Time
}

func newCapacity(dir string, limits Limits, used int64, log *slog.Logger) *capacity {
	c := &capacity{limits: limits, dir: dir, log: log}
	c.used.Store(used)
	c.update(c.free())
	return c
}

// free is the space available on the spool's file system (statfs: one
// cheap system call); -1 when it cannot be known.
func (c *capacity) free() int64 {
	var s syscall.Statfs_t
	if err := syscall.Statfs(c.dir, &s); err != nil {
		return -1
	}
	return int64(s.Bavail) * int64(s.Bsize)
}

// update re-decides fullness from the bytes held and the free space.
func (c *capacity) update(free int64) {
	used := c.used.Load()
	l := c.limits
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case !c.full:
		why := ""
		if l.MaxBytes > 0 && float64(used) >= highRatio*float64(l.MaxBytes) {
			why = fmt.Sprintf("the spool holds %d bytes, 95%% of its limit (--spool-max-bytes) is %d", used, int64(highRatio*float64(l.MaxBytes)))
		} else if l.MinFree > 0 && free >= 0 && free < l.MinFree {
			why = fmt.Sprintf("%d bytes free on the spool's file system, %d must stay free (--spool-min-free)", free, l.MinFree)
		}
		if why != "" {
			c.full, c.reason, c.since = true, why, time.Now()
			c.log.Warn("spool full: refusing new objects until it drains", "reason", why,
				"resume_below_bytes", int64(resumeRatio*float64(l.MaxBytes)), "resume_above_free", int64(float64(l.MinFree)/resumeRatio))
		}
	default:
		okUsed := l.MaxBytes <= 0 || float64(used) <= resumeRatio*float64(l.MaxBytes)
		okFree := l.MinFree <= 0 || free < 0 || float64(free) >= float64(l.MinFree)/resumeRatio
		if okUsed && okFree {
			c.log.Info("spool below its low-water mark: taking objects again", "was_full_for", time.Since(c.since).Round(time.Second), "used_bytes", used, "free_bytes", free)
			c.full, c.reason = false, ""
		}
	}
}

// add records n more (or, negative, fewer) bytes held. A nil capacity (an
// operator command's view of the spool) counts nothing.
func (c *capacity) add(n int64) {
	if c == nil || n == 0 {
		return
	}
	c.used.Add(n)
	if n < 0 {
		c.update(c.free()) // a drain may bring the spool below its low mark
	} else if l := c.limits.MaxBytes; l > 0 && float64(c.used.Load()) >= highRatio*float64(l) {
		c.update(-1)
	}
}

// Full reports whether the spool is refusing new objects, and why.
func (c *capacity) Full() (bool, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.full, c.reason
}

// admit says whether a new object may start.
func (c *capacity) admit() error {
	c.update(c.free())
	if full, why := c.Full(); full {
		return fmt.Errorf("%w: %s", ErrFull, why)
	}
	return nil
}

// fits says whether n more bytes of an object being received still fit:
// an object larger than what is left is refused as soon as it is known, not
// after it has been written whole. checkFree asks for a statfs too.
func (c *capacity) fits(n int64, checkFree bool) error {
	l := c.limits
	if l.MaxBytes > 0 {
		if used := c.used.Load(); used+n > l.MaxBytes {
			return fmt.Errorf("%w: the object does not fit: the spool holds %d bytes of its %d (--spool-max-bytes)", ErrFull, used, l.MaxBytes)
		}
	}
	if checkFree && l.MinFree > 0 {
		if free := c.free(); free >= 0 && free-n < l.MinFree/2 {
			// Half of MinFree is the hard floor for an object already
			// started; below MinFree no new one starts (admit).
			return fmt.Errorf("%w: the object does not fit: %d bytes free on the spool's file system", ErrFull, free)
		}
	}
	return nil
}

// resync sets the bytes held from a listing of the spool (which also sees
// what other processes, such as `dicomgw spool purge`, changed).
func (c *capacity) resync(s *Stats) {
	c.used.Store(s.Bytes())
	c.update(s.FSFree)
}

// Used is the number of bytes the spool holds.
func (c *capacity) Used() int64 { return c.used.Load() }
