package console

import (
	"net/http"
	"time"
)

// destView is one destination on the overview.
type destView struct {
	Name, Kind    string
	Up            Num
	Paused        bool
	PauseReason   string
	Failing       bool // attempts failed recently and none was delivered
	Queued        Num
	Oldest        Num
	Dead          Num
	Delivered     Increase
	Retried       Increase // failed attempts, to be tried again
	DeadLettered  Increase
	RecentFailure Increase // failed attempts in the last few minutes
	LastFailure   time.Time
	LastReason    string // why the last attempt failed
}

// Status is the destination's state in a word, for the page.
func (d destView) Status() string {
	switch {
	case d.Paused || d.Up.Present && d.Up.Value == 0:
		return "paused"
	case d.Failing:
		return "failing"
	}
	return "up"
}

type spoolView struct {
	Used, Limit, MinFree, FSFree, FSSize, Refusing Num
	Queued, Dead, Delivered, Incoming              Num
}

// stateNum is a number of one state.
type stateNum struct {
	State string
	Num
}

type overviewData struct {
	Destinations []destView
	Spool        spoolView
	Active       Num // associations in progress
	Accepted     Num // associations ended since start, released ones
	OpenCommit   []stateNum
	Window       time.Duration // what "last hour" counted over
	Started      time.Time
	MetricsError string
}

// failingWindow is how far back "failing" looks.
const failingWindow = 5 * time.Minute

func (c *Console) overview(r *http.Request, ss *session, v *view) (string, int) {
	v.Title, v.Nav, v.Refresh = "Overview", "overview", int(c.cfg.Refresh/time.Second)
	fams, err := c.cfg.Gatherer.Gather()
	d := overviewData{Started: c.started}
	if err != nil {
		// Some collector failed; the rest is still shown.
		d.MetricsError = err.Error()
	}
	s := flatten(fams)
	for _, name := range labelValues(fams, "dicomgw_destination_info", "destination") {
		dv := destView{
			Name:   name,
			Kind:   labelOf(fams, "dicomgw_destination_info", "destination", name, "kind"),
			Up:     s.num("dicomgw_forward_destination_up", "destination", name),
			Queued: s.num("dicomgw_destination_queued_objects", "destination", name),
			Oldest: s.num("dicomgw_destination_oldest_queued_age_seconds", "destination", name),
			Dead:   s.num("dicomgw_destination_dead_objects", "destination", name),
		}
		dv.Paused, dv.PauseReason = c.cfg.Source.Paused(name)
		dv.LastFailure, dv.LastReason = c.cfg.Source.LastFailure(name)
		inc := func(outcome string, window time.Duration) Increase {
			n := s.num("dicomgw_forward_instances_total", "destination", name, "outcome", outcome)
			return c.hist.increase(n.Key, n.Value, window)
		}
		dv.Delivered, dv.Retried, dv.DeadLettered = inc("delivered", time.Hour), inc("retried", time.Hour), inc("dead_lettered", time.Hour)
		dv.RecentFailure = inc("retried", failingWindow)
		recentDelivered := inc("delivered", failingWindow)
		dv.Failing = (dv.RecentFailure.Value > 0 || inc("dead_lettered", failingWindow).Value > 0) && recentDelivered.Value == 0
		d.Window = dv.Delivered.Window
		d.Destinations = append(d.Destinations, dv)
	}
	d.Spool = spoolView{
		Used:      s.num("dicomgw_spool_used_bytes"),
		Limit:     s.num("dicomgw_spool_limit_bytes"),
		MinFree:   s.num("dicomgw_spool_min_free_bytes"),
		FSFree:    s.num("dicomgw_spool_filesystem_free_bytes"),
		FSSize:    s.num("dicomgw_spool_filesystem_size_bytes"),
		Refusing:  s.num("dicomgw_spool_refusing"),
		Queued:    s.num("dicomgw_spool_objects", "state", "queued"),
		Dead:      s.num("dicomgw_spool_objects", "state", "dead"),
		Delivered: s.num("dicomgw_spool_objects", "state", "delivered"),
		Incoming:  s.num("dicomgw_spool_incoming_objects"),
	}
	d.Active = s.num("dicomgw_associations_active")
	d.Accepted = s.num("dicomgw_associations_total", "outcome", "released")
	for _, st := range []string{"waiting", "reporting"} {
		if n := s.num("dicomgw_commitment_open_requests", "state", st); n.Present {
			d.OpenCommit = append(d.OpenCommit, stateNum{st, n})
		}
	}
	if len(d.Destinations) > 0 && d.Window == 0 {
		d.Window = c.cfg.Now().Sub(c.started)
	}
	v.Data = d
	return "overview.html", http.StatusOK
}
