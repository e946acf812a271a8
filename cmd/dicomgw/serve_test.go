package main

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/dicomgw/dicomgw/pkg/spool"
)

// blockingSpool is a janitorSpool whose Resync waits until released.
type blockingSpool struct {
	resyncing chan struct{} // closed when Resync first begins
	once      sync.Once
	release   chan struct{}
}

func (b *blockingSpool) Purge(spool.State, time.Time) (int, int64, error) { return 0, 0, nil }

func (b *blockingSpool) Resync() error {
	b.once.Do(func() { close(b.resyncing) })
	<-b.release
	return nil
}

// TestStopWaitsForJanitor: stopping the background work (which serve does
// before it closes the spool) waits for the spool janitor to finish what
// it is doing, as well as for the forwarder.
func TestStopWaitsForJanitor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sp := &blockingSpool{resyncing: make(chan struct{}), release: make(chan struct{})}
		forwarding := false
		stop := startBackground(func(ctx context.Context) error {
			forwarding = true
			<-ctx.Done()
			time.Sleep(time.Second) // requests in flight finishing
			forwarding = false
			return ctx.Err()
		}, sp, 0, slog.New(slog.DiscardHandler))
		<-sp.resyncing // the janitor's first round, after its 30 s
		stopped := make(chan struct{})
		go func() {
			stop()
			close(stopped)
		}()
		time.Sleep(time.Minute)
		synctest.Wait()
		select {
		case <-stopped:
			close(sp.release)
			t.Fatal("stop returned while the janitor was still recounting the spool")
		default:
		}
		close(sp.release)
		<-stopped
		if forwarding {
			t.Fatal("stop returned while the forwarder was still running")
		}
	})
}
