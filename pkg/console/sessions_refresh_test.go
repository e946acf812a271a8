package console

import (
	"testing"
	"time"
)

// A page that refreshes itself does not keep its session alive (peek);
// a page asked for does (get).
func TestRefreshDoesNotKeepSessionAlive(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	s := newSessions(time.Minute, time.Hour, func() time.Time { return now })
	a, b := s.create("a"), s.create("b")
	now = now.Add(50 * time.Second)
	if s.peek(a.id) == nil || s.get(b.id) == nil {
		t.Fatal("sessions ended before their idle timeout")
	}
	now = now.Add(20 * time.Second) // 70 s after a's last use, 20 s after b's
	if s.peek(a.id) != nil {
		t.Error("a session kept alive by refreshes alone")
	}
	if s.peek(b.id) == nil {
		t.Error("a session used 20 s ago ended")
	}
	now = now.Add(time.Hour)
	if s.get(b.id) != nil {
		t.Error("a session outlived its idle timeout")
	}
}
