package console

import (
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/dicomgw/dicomgw/pkg/dimse"
)

// Associations keeps the most recent associations that ended, for the
// associations page. It is fed by the DIMSE server's Ended hook.
type Associations struct {
	mu   sync.Mutex
	ring []dimse.Summary
	next int
	full bool
}

// DefaultRecentAssociations is how many are kept when NewAssociations is
// given 0.
const DefaultRecentAssociations = 500

// NewAssociations keeps the last n associations (0: the default).
func NewAssociations(n int) *Associations {
	if n <= 0 {
		n = DefaultRecentAssociations
	}
	return &Associations{ring: make([]dimse.Summary, n)}
}

// Record adds an association that ended. It never blocks for long (the
// association's goroutine calls it).
func (a *Associations) Record(s dimse.Summary) {
	a.mu.Lock()
	a.ring[a.next] = s
	a.next = (a.next + 1) % len(a.ring)
	if a.next == 0 {
		a.full = true
	}
	a.mu.Unlock()
}

// Recent is the associations kept, the most recent end first.
func (a *Associations) Recent() []dimse.Summary {
	a.mu.Lock()
	var out []dimse.Summary
	if a.full {
		out = append(out, a.ring[a.next:]...)
	}
	out = append(out, a.ring[:a.next]...)
	a.mu.Unlock()
	slices.Reverse(out)
	return out
}

type assocData struct {
	InProgress []dimse.Summary
	Recent     []dimse.Summary
	Active     Num
	Kept       int
}

func (c *Console) associations(r *http.Request, ss *session, v *view) (string, int) {
	v.Title, v.Nav, v.Refresh = "Associations", "associations", int(c.cfg.Refresh/time.Second)
	fams, _ := c.cfg.Gatherer.Gather()
	d := assocData{Recent: c.cfg.Associations.Recent(), Active: flatten(fams).num("dicomgw_associations_active"), Kept: len(c.cfg.Associations.ring)}
	if c.cfg.Active != nil {
		d.InProgress = c.cfg.Active()
	}
	v.Data = d
	return "associations.html", http.StatusOK
}
