package spool

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// StateStats counts the objects in one state.
type StateStats struct {
	Objects int
	Bytes   int64
	Oldest  time.Time // modification time of the oldest object; zero when none
}

// Stats is a snapshot of the spool, for metrics, readiness and the
// operator's `spool stats`.
type Stats struct {
	States   map[State]StateStats
	Retrying int   // queued objects that have failed before (have a retry record)
	Incoming int   // objects being received
	InBytes  int64 // bytes of objects being received
	FSFree   int64 // bytes available to us on the spool's file system
	FSSize   int64
	Taken    time.Time
}

// Bytes is every byte the spool holds.
func (s *Stats) Bytes() int64 {
	n := s.InBytes
	for _, st := range s.States {
		n += st.Bytes
	}
	return n
}

// Stats lists the spool's directories (names and sizes only: no file is
// opened) and the file system's free space.
func (d *Dir) Stats() (Stats, error) {
	s := Stats{States: make(map[State]StateStats, len(States)), Taken: time.Now()}
	for _, st := range States {
		var ss StateStats
		err := eachFile(filepath.Join(d.root, st.dir()), func(name string, info fs.FileInfo) {
			switch {
			case strings.HasSuffix(name, objectExt):
				ss.Objects++
				ss.Bytes += info.Size()
				if ss.Oldest.IsZero() || info.ModTime().Before(ss.Oldest) {
					ss.Oldest = info.ModTime()
				}
			case st == StateQueued && strings.HasSuffix(name, retryExt):
				s.Retrying++
			}
		})
		if err != nil {
			return s, err
		}
		s.States[st] = ss
	}
	err := eachFile(filepath.Join(d.root, incomingDir), func(name string, info fs.FileInfo) {
		if strings.HasPrefix(name, ".") {
			return // a slot: empty, or another name of an object counted here or in queue/
		}
		s.Incoming++
		s.InBytes += info.Size()
	})
	if err != nil {
		return s, err
	}
	var sfs syscall.Statfs_t
	if err := syscall.Statfs(d.root, &sfs); err != nil {
		return s, fmt.Errorf("spool: statfs: %w", err)
	}
	s.FSFree = int64(sfs.Bavail) * int64(sfs.Bsize)
	s.FSSize = int64(sfs.Blocks) * int64(sfs.Bsize)
	return s, nil
}

// eachFile calls fn for each regular file of dir; a missing dir has none.
func eachFile(dir string, fn func(name string, info fs.FileInfo)) error {
	des, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("spool: %w", err)
	}
	for _, de := range des {
		if !de.Type().IsRegular() {
			continue
		}
		info, err := de.Info()
		if err != nil {
			continue // gone meanwhile
		}
		fn(de.Name(), info)
	}
	return nil
}

// StatsCache takes Stats at most once per maxAge, so that frequent readers
// (scrapes, readiness probes) do not each list the spool.
type StatsCache struct {
	d      *Dir
	maxAge time.Duration

	mu    sync.Mutex
	stats Stats
	err   error
}

// NewStatsCache returns a cache of d's Stats.
func NewStatsCache(d *Dir, maxAge time.Duration) *StatsCache {
	return &StatsCache{d: d, maxAge: maxAge}
}

// Get returns a snapshot no older than maxAge.
func (c *StatsCache) Get() (Stats, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stats.Taken.IsZero() || time.Since(c.stats.Taken) > c.maxAge {
		c.stats, c.err = c.d.Stats()
		c.stats.Taken = time.Now()
	}
	return c.stats, c.err
}
