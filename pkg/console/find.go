package console

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/dicomgw/dicomgw/pkg/ledger"
)

// maxFound is the most objects Find shows; narrower criteria show the rest.
const maxFound = 200

type findForm struct {
	Study, SOP, Calling, From, To string
}

type findData struct {
	Form    findForm
	Asked   bool
	Objects []ledger.ObjectState
	More    bool // there were more than maxFound
	// For a list of objects: every destination any of them has, and how
	// many are in each state for each.
	Destinations []string
	Summary      []destSummary
}

// destSummary counts the objects found by their state for one destination.
type destSummary struct {
	Name                     string
	Delivered, Pending, Dead int
}

// Delivery is obj's delivery to dest, if it has one (for the list's
// columns).
func (d *findData) Delivery(obj ledger.ObjectState, dest string) *ledger.DeliveryState {
	for i := range obj.Deliveries {
		if obj.Deliveries[i].Destination == dest {
			return &obj.Deliveries[i]
		}
	}
	return nil
}

func (d *findData) summarize() {
	idx := map[string]*destSummary{}
	for _, o := range d.Objects {
		for _, ds := range o.Deliveries {
			s := idx[ds.Destination]
			if s == nil {
				s = &destSummary{Name: ds.Destination}
				idx[ds.Destination] = s
				d.Destinations = append(d.Destinations, ds.Destination)
			}
			switch ds.State {
			case ledger.StateDelivered:
				s.Delivered++
			case ledger.StatePending:
				s.Pending++
			case ledger.StateDead:
				s.Dead++
			}
		}
	}
	slices.Sort(d.Destinations)
	for _, n := range d.Destinations {
		d.Summary = append(d.Summary, *idx[n])
	}
}

// Time inputs: what <input type="datetime-local"> sends, read as UTC.
var timeLayouts = []string{"2006-01-02T15:04", "2006-01-02T15:04:05", "2006-01-02 15:04", "2006-01-02 15:04:05", "2006-01-02"}

func parseUTC(s string) (time.Time, error) {
	for _, l := range timeLayouts {
		if t, err := time.ParseInLocation(l, s, time.UTC); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a time (YYYY-MM-DD HH:MM, UTC)", clipInput(s))
}

// validUID: what the gateway may have stored as a UID (its lenient policy:
// 1-64 bytes of [0-9A-Za-z._-]).
func validUID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// validAE: an AE title (PS3.5 VR AE: 16 characters of the default
// repertoire, no backslash or control characters).
func validAE(s string) bool {
	if len(s) == 0 || len(s) > 16 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '\\' {
			return false
		}
	}
	return true
}

// clipInput is something typed into a form, for an error message (the
// template escapes it).
func clipInput(s string) string {
	if len(s) > 70 {
		s = s[:70] + "..."
	}
	return strings.ToValidUTF8(s, "?")
}

// query reads the form into a ledger query.
func (f findForm) query() (ledger.Query, error) {
	q := ledger.Query{Limit: maxFound + 1}
	var errs []error
	if f.Study != "" {
		if !validUID(f.Study) {
			errs = append(errs, fmt.Errorf("the Study Instance UID %q is not a UID", clipInput(f.Study)))
		}
		q.StudyInstanceUID = f.Study
	}
	if f.SOP != "" {
		if !validUID(f.SOP) {
			errs = append(errs, fmt.Errorf("the SOP Instance UID %q is not a UID", clipInput(f.SOP)))
		}
		q.SOPInstanceUID = f.SOP
	}
	if f.Calling != "" {
		if !validAE(f.Calling) {
			errs = append(errs, fmt.Errorf("the calling AE title %q is not an AE title (1-16 characters)", clipInput(f.Calling)))
		}
		q.CallingAE = f.Calling
	}
	var err error
	if f.From != "" {
		if q.From, err = parseUTC(f.From); err != nil {
			errs = append(errs, fmt.Errorf("from: %w", err))
		}
	}
	if f.To != "" {
		if q.To, err = parseUTC(f.To); err != nil {
			errs = append(errs, fmt.Errorf("to: %w", err))
		}
	}
	if !q.From.IsZero() && !q.To.IsZero() && !q.To.After(q.From) {
		errs = append(errs, errors.New("the time range ends before it starts"))
	}
	return q, errors.Join(errs...)
}

func formOf(v url.Values) findForm {
	t := func(k string) string { return strings.TrimSpace(v.Get(k)) }
	return findForm{Study: t("study"), SOP: t("sop"), Calling: t("calling"), From: t("from"), To: t("to")}
}

func (c *Console) find(r *http.Request, ss *session, v *view) (string, int) {
	v.Title, v.Nav = "Find", "find"
	f := formOf(r.URL.Query())
	d := findData{Form: f}
	v.Data = &d
	if f == (findForm{}) {
		return "find.html", http.StatusOK
	}
	q, err := f.query()
	if err != nil {
		v.Error = err.Error()
		return "find.html", http.StatusBadRequest
	}
	d.Asked = true
	objs, err := c.cfg.Source.Trace(q)
	if err != nil {
		c.log.Error("console: cannot read the delivery ledger", "err", err)
		v.Error = "The delivery ledger could not be read; see the gateway's log."
		return "find.html", http.StatusInternalServerError
	}
	if len(objs) > maxFound {
		objs, d.More = objs[:maxFound], true
	}
	d.Objects = objs
	d.summarize()
	return "find.html", http.StatusOK
}
