package console

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/dicomgw/dicomgw/pkg/ledger"
)

// maxDead is the most dead letters listed, and acted on at once.
const maxDead = 1000

// deadLetter is one dead delivery: an object one destination could not
// take.
type deadLetter struct {
	ID, Destination     string
	SOPInstanceUID      string
	StudyInstanceUID    string
	CallingAE, CalledAE string
	Received, DeadAt    time.Time
	Reason, ReasonKey   string
	Attempts            int
	// Others are the object's other destinations that are still pending
	// (it cannot be purged before they are done) or dead too (purging
	// gives those up as well).
	Pending, AlsoDead []string
}

// Value is the dead letter in a form: "ID/destination".
func (d deadLetter) Value() string { return d.ID + "/" + d.Destination }

// reasonGroup is the dead letters of one destination with one kind of
// reason (Reason is the first one's).
type reasonGroup struct {
	Destination, Reason, Key string
	Count                    int
}

// reasonKey names a kind of reason in a URL or a form without repeating it
// (a reason is a destination's words, which could be anything). Reasons
// that differ only in their numbers ("after 5 attempts over 6s", a port,
// a count) are one kind: one group, one "retry all".
func reasonKey(reason string) string {
	h := sha256.Sum256([]byte(digits.ReplaceAllString(reason, "#")))
	return hex.EncodeToString(h[:8])
}

var digits = regexp.MustCompile(`[0-9]+`)

// deadLetters lists the dead letters of dest ("" any), with reason key
// reason ("" any).
func (c *Console) deadLetters(dest, reason string) ([]deadLetter, error) {
	objs, err := c.cfg.Source.DeadLetters(dest, maxDead)
	if err != nil {
		return nil, err
	}
	var out []deadLetter
	for _, o := range objs {
		var pending, dead []string
		for _, ds := range o.Deliveries {
			switch ds.State {
			case ledger.StatePending:
				pending = append(pending, ds.Destination)
			case ledger.StateDead:
				dead = append(dead, ds.Destination)
			}
		}
		for _, ds := range o.Deliveries {
			if ds.State != ledger.StateDead || dest != "" && ds.Destination != dest {
				continue
			}
			dl := deadLetter{
				ID: o.ID, Destination: ds.Destination,
				SOPInstanceUID: o.SOPInstanceUID, StudyInstanceUID: o.StudyInstanceUID,
				CallingAE: o.CallingAE, CalledAE: o.CalledAE,
				Received: o.Received, DeadAt: ds.DeadAt,
				Reason: ds.DeadReason, ReasonKey: reasonKey(ds.DeadReason),
				Attempts: ds.Retry.Attempts,
				Pending:  pending,
			}
			for _, x := range dead {
				if x != ds.Destination {
					dl.AlsoDead = append(dl.AlsoDead, x)
				}
			}
			if reason != "" && dl.ReasonKey != reason {
				continue
			}
			out = append(out, dl)
		}
	}
	return out, nil
}

func groups(dls []deadLetter) []reasonGroup {
	idx := map[[2]string]*reasonGroup{}
	var out []*reasonGroup
	for _, d := range dls {
		k := [2]string{d.Destination, d.ReasonKey}
		g := idx[k]
		if g == nil {
			g = &reasonGroup{Destination: d.Destination, Reason: d.Reason, Key: d.ReasonKey}
			idx[k] = g
			out = append(out, g)
		}
		g.Count++
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Destination != out[j].Destination {
			return out[i].Destination < out[j].Destination
		}
		return out[i].Count > out[j].Count
	})
	res := make([]reasonGroup, len(out))
	for i, g := range out {
		res[i] = *g
	}
	return res
}

type deadData struct {
	Destination, Reason string // the filter
	Destinations        []string
	Groups              []reasonGroup
	Letters             []deadLetter
	Full                bool // maxDead listed: there may be more
}

func (c *Console) dead(r *http.Request, ss *session, v *view) (string, int) {
	v.Title, v.Nav = "Dead letters", "dead"
	q := r.URL.Query()
	dest, reason := q.Get("destination"), q.Get("reason")
	if dest != "" && !validDest(dest) {
		v.Error = "no such destination"
		return "dead.html", http.StatusBadRequest
	}
	if reason != "" && !validReasonKey(reason) {
		v.Error = "no such reason"
		return "dead.html", http.StatusBadRequest
	}
	all, err := c.deadLetters(dest, "")
	if err != nil {
		c.log.Error("console: cannot read the dead letters", "err", err)
		v.Error = "The delivery ledger could not be read; see the gateway's log."
		return "dead.html", http.StatusInternalServerError
	}
	d := deadData{Destination: dest, Reason: reason, Groups: groups(all), Full: len(all) >= maxDead}
	for _, g := range d.Groups {
		if !slices.Contains(d.Destinations, g.Destination) {
			d.Destinations = append(d.Destinations, g.Destination)
		}
	}
	for _, dl := range all {
		if reason == "" || dl.ReasonKey == reason {
			d.Letters = append(d.Letters, dl)
		}
	}
	v.Data = d
	return "dead.html", http.StatusOK
}

// validDest: a destination's name (cmd/dicomgw's rule).
func validDest(s string) bool {
	if len(s) == 0 || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func validReasonKey(s string) bool {
	if len(s) != 16 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// selection is what an action applies to: chosen dead letters, or every
// dead letter of a destination with a reason.
type selection struct {
	Action      string // retry, purge
	Scope       string // selected, reason
	Destination string // scope reason
	Reason      string // its key
	Picked      []string
}

func readSelection(f url.Values) (selection, error) {
	s := selection{Action: f.Get("action"), Scope: f.Get("scope"), Destination: f.Get("destination"), Reason: f.Get("reason")}
	if s.Action != "retry" && s.Action != "purge" {
		return s, fmt.Errorf("no such action")
	}
	switch s.Scope {
	case "selected":
		for _, p := range f["sel"] {
			id, dest, ok := strings.Cut(p, "/")
			if !ok || !validDest(dest) || len(id) != 25 {
				return s, fmt.Errorf("a selected dead letter is not one")
			}
			s.Picked = append(s.Picked, p)
		}
		if len(s.Picked) == 0 {
			return s, fmt.Errorf("nothing was selected")
		}
		if len(s.Picked) > maxDead {
			return s, fmt.Errorf("more than %d dead letters selected", maxDead)
		}
	case "reason":
		if !validDest(s.Destination) || !validReasonKey(s.Reason) {
			return s, fmt.Errorf("no such destination or reason")
		}
	default:
		return s, fmt.Errorf("no such scope")
	}
	return s, nil
}

// resolve is the dead letters the selection names, as they are now.
func (c *Console) resolve(s selection) ([]deadLetter, error) {
	if s.Scope == "reason" {
		return c.deadLetters(s.Destination, s.Reason)
	}
	all, err := c.deadLetters("", "")
	if err != nil {
		return nil, err
	}
	var out []deadLetter
	for _, d := range all {
		if slices.Contains(s.Picked, d.Value()) {
			out = append(out, d)
		}
	}
	return out, nil
}

type confirmData struct {
	Sel     selection
	Letters []deadLetter
	Gone    int // selected, and no longer dead letters
}

// deadConfirm shows what an action would do, and asks.
func (c *Console) deadConfirm(w http.ResponseWriter, r *http.Request, ss *session) {
	v := view{Title: "Confirm", Nav: "dead", User: ss.user, CSRF: ss.csrf}
	sel, err := readSelection(r.PostForm)
	if err != nil {
		c.nothingDone(w, r, ss, err.Error())
		return
	}
	dls, err := c.resolve(sel)
	if err != nil {
		c.log.Error("console: cannot read the dead letters", "err", err)
		v.Error = "The delivery ledger could not be read; see the gateway's log."
		c.render(w, http.StatusInternalServerError, "confirm.html", v)
		return
	}
	d := confirmData{Sel: sel, Letters: dls}
	if sel.Scope == "selected" {
		d.Gone = len(sel.Picked) - len(dls)
	}
	v.Data = d
	c.render(w, http.StatusOK, "confirm.html", v)
}

// nothingDone goes back to the dead letters saying why nothing was done.
func (c *Console) nothingDone(w http.ResponseWriter, r *http.Request, ss *session, why string) {
	c.sessions.setFlash(ss, "Nothing done: "+why+".")
	http.Redirect(w, r, "/dead", http.StatusSeeOther)
}

// deadAct does what was confirmed, logs it with the user, and goes back to
// the dead letters with what happened.
func (c *Console) deadAct(w http.ResponseWriter, r *http.Request, ss *session) {
	sel, err := readSelection(r.PostForm)
	if err == nil && r.PostForm.Get("confirm") != "yes" {
		err = fmt.Errorf("not confirmed")
	}
	if err != nil {
		c.nothingDone(w, r, ss, err.Error())
		return
	}
	dls, err := c.resolve(sel)
	if err != nil {
		c.log.Error("console: cannot read the dead letters", "err", err)
		c.nothingDone(w, r, ss, "the delivery ledger could not be read; see the gateway's log")
		return
	}
	var done, failed []string
	var firstErr error
	purged := map[string]bool{}
	for _, d := range dls {
		var err error
		switch sel.Action {
		case "retry":
			err = c.cfg.Source.Retry(d.ID, d.Destination)
		case "purge":
			if purged[d.ID] { // dead for two selected destinations: one file, tried once
				continue
			}
			purged[d.ID] = true
			err = c.cfg.Source.Purge(d.ID)
		}
		if err != nil {
			failed = append(failed, d.Value())
			if firstErr == nil {
				firstErr = err
			}
			c.m.actions.WithLabelValues(sel.Action, "failed").Inc()
			continue
		}
		done = append(done, d.Value())
		c.m.actions.WithLabelValues(sel.Action, "done").Inc()
	}
	attrs := []any{"user", ss.user, "action", sel.Action, "scope", sel.Scope, "done", len(done), "failed", len(failed), "client", c.clientAddr(r)}
	if sel.Scope == "reason" {
		attrs = append(attrs, "destination", sel.Destination, "reason_key", sel.Reason)
	}
	attrs = append(attrs, "dead_letters", strings.Join(done, " "))
	if firstErr != nil {
		attrs = append(attrs, "not_done", strings.Join(failed, " "), "err", firstErr)
	}
	c.log.Info("console: dead letters "+pastTense(sel.Action), attrs...)
	msg := fmt.Sprintf("%s %d dead letter(s).", capitalize(pastTense(sel.Action)), len(done))
	if len(failed) > 0 {
		msg += fmt.Sprintf(" %d could not be: %v.", len(failed), firstErr)
	}
	if len(dls) == 0 {
		msg = "Nothing done: none of them is a dead letter any more."
	}
	c.sessions.setFlash(ss, msg)
	back := "/dead"
	if sel.Scope == "reason" {
		back += "?destination=" + url.QueryEscape(sel.Destination)
	}
	http.Redirect(w, r, back, http.StatusSeeOther)
}

func pastTense(action string) string {
	if action == "retry" {
		return "re-queued"
	}
	return "purged"
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
