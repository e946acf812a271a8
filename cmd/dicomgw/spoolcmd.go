package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/dicomgw/dicomgw/pkg/ledger"
	"github.com/dicomgw/dicomgw/pkg/spool"
)

const spoolUsage = `usage: dicomgw spool <command> --spool-dir DIR [flags]

commands (safe while the daemon runs):
  stats                         objects, bytes and oldest age per state
  ls [--state S] [--destination NAME] [--json]
                                list objects with their UIDs, and per destination
                                their state, attempts and reasons
  retry [--destination NAME] (--all | --sop UID | --study UID | ID...)
                                send dead letters again (to NAME only, or to every
                                destination that could not deliver them); the daemon
                                picks them up within its rescan interval, 30 s
  trace (--study UID | --sop UID | --calling-ae AE [--since D]) [--json]
                                where objects went: received when and from whom,
                                per destination delivered when or why not; from
                                the delivery ledger, also after they left the spool
  commitments [--json]          storage commitment requests, newest first: who asked,
                                for how many instances, waiting, reporting (with the
                                report's attempts and last error), reported or abandoned
  purge --older-than D [--state dead|delivered]
                                delete dead letters / kept delivered objects older than D
`

// spoolCmd runs the operator commands on a spool directory.
func spoolCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, spoolUsage)
		return 2
	}
	sub := args[0]
	fs := pflag.NewFlagSet("dicomgw spool "+sub, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("spool-dir", "./var/spool", "the spool directory")
	state := fs.String("state", "", "only this state: queued, dead or delivered")
	asJSON := fs.Bool("json", false, "JSON output (ls, stats)")
	all := fs.Bool("all", false, "retry: every dead letter")
	sop := fs.String("sop", "", "retry: the dead letters with this SOP Instance UID")
	study := fs.String("study", "", "retry: the dead letters of this study")
	olderThan := fs.String("older-than", "", "purge: age, e.g. 72h or 7d")
	destination := fs.String("destination", "", "ls, retry: only this destination")
	callingAE := fs.String("calling-ae", "", "trace: the objects this AE title sent")
	since := fs.String("since", "", "trace: received within this age, e.g. 24h or 7d")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "dicomgw spool %s: %v\n", sub, err)
		return 2
	}
	d, err := spool.OpenDir(*dir)
	if err != nil {
		fmt.Fprintf(stderr, "dicomgw spool %s: %v\n", sub, err)
		return 1
	}
	states := spool.States
	if *state != "" {
		st, err := spool.ParseState(*state)
		if err != nil {
			fmt.Fprintf(stderr, "dicomgw spool %s: %v\n", sub, err)
			return 2
		}
		states = []spool.State{st}
	}
	switch sub {
	case "stats":
		err = spoolStats(stdout, d, *asJSON)
	case "ls":
		err = spoolList(stdout, d, states, *destination, *asJSON)
	case "retry":
		err = spoolRetry(stdout, d, *destination, *all, *sop, *study, fs.Args())
	case "trace":
		q := ledger.Query{StudyInstanceUID: *study, SOPInstanceUID: *sop, CallingAE: *callingAE, Limit: 1000}
		if *since != "" {
			age, perr := parseAge(*since)
			if perr != nil {
				fmt.Fprintf(stderr, "dicomgw spool trace: --since: %v\n", perr)
				return 2
			}
			q.From = time.Now().Add(-age)
		}
		if q.StudyInstanceUID == "" && q.SOPInstanceUID == "" && q.CallingAE == "" {
			fmt.Fprintln(stderr, "dicomgw spool trace: say which objects: --study UID, --sop UID or --calling-ae AE")
			return 2
		}
		err = spoolTrace(stdout, d, q, *asJSON)
	case "commitments":
		err = spoolCommitments(stdout, d, *asJSON)
	case "purge":
		if *olderThan == "" {
			fmt.Fprintln(stderr, "dicomgw spool purge: --older-than is required")
			return 2
		}
		age, perr := parseAge(*olderThan)
		if perr != nil {
			fmt.Fprintf(stderr, "dicomgw spool purge: --older-than: %v\n", perr)
			return 2
		}
		if *state == "" {
			states = []spool.State{spool.StateDead, spool.StateDelivered}
		}
		err = spoolPurge(stdout, d, states, age)
	default:
		fmt.Fprintf(stderr, "dicomgw spool: unknown command %q\n\n%s", sub, spoolUsage)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "dicomgw spool %s: %v\n", sub, err)
		return 1
	}
	return 0
}

// parseAge reads a duration, also in days ("7d").
func parseAge(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		var days float64
		if _, err := fmt.Sscanf(n, "%g", &days); err != nil || days < 0 {
			return 0, fmt.Errorf("%q is not a number of days", s)
		}
		return time.Duration(days * 24 * float64(time.Hour)), nil
	}
	d, err := time.ParseDuration(s)
	if err == nil && d < 0 {
		err = errors.New("negative age")
	}
	return d, err
}

type stateStats struct {
	State    string  `json:"state"`
	Objects  int     `json:"objects"`
	Bytes    int64   `json:"bytes"`
	Retrying int     `json:"retrying,omitempty"` // queued objects that have failed before
	OldestS  float64 `json:"oldest_age_seconds"`
}

func spoolStats(w io.Writer, d *spool.Dir, asJSON bool) error {
	st, err := d.Stats()
	if err != nil {
		return err
	}
	var out []stateStats
	for _, state := range spool.States {
		ss := st.States[state]
		s := stateStats{State: string(state), Objects: ss.Objects, Bytes: ss.Bytes}
		if !ss.Oldest.IsZero() {
			s.OldestS = max(0, st.Taken.Sub(ss.Oldest).Seconds())
		}
		if state == spool.StateQueued {
			s.Retrying = st.Retrying
		}
		out = append(out, s)
	}
	out = append(out, stateStats{State: "incoming", Objects: st.Incoming, Bytes: st.InBytes})
	if asJSON {
		return json.NewEncoder(w).Encode(out)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STATE\tOBJECTS\tBYTES\tRETRYING\tOLDEST")
	for _, s := range out {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%v\n", s.State, s.Objects, s.Bytes, s.Retrying, (time.Duration(s.OldestS) * time.Second).Round(time.Second))
	}
	fmt.Fprintf(tw, "free on the file system\t\t%d\t\t\n", st.FSFree)
	return tw.Flush()
}

type listed struct {
	ID          string    `json:"id"`
	State       string    `json:"state"`
	Bytes       int64     `json:"bytes"`
	Since       time.Time `json:"since"`
	SOPInstance string    `json:"sop_instance_uid"`
	Study       string    `json:"study_instance_uid"`
	CallingAE   string    `json:"calling_ae"`
	Attempts    int       `json:"attempts,omitempty"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	Reason      string    `json:"reason,omitempty"`  // dead: why; queued: last error
	Damaged     bool      `json:"damaged,omitempty"` // its files are damaged: it is (or will be) quarantined
	// Destinations are the object's deliveries, from the ledger.
	Destinations []listedDelivery `json:"destinations,omitempty"`
}

type listedDelivery struct {
	Name        string    `json:"name"`
	State       string    `json:"state"`
	Attempts    int       `json:"attempts,omitempty"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	DeliveredAt time.Time `json:"delivered_at,omitzero"`
	DeadReason  string    `json:"dead_reason,omitempty"`
}

// openLedger opens the spool's delivery ledger for reading; nil (and no
// error) when there is none yet (a spool no routing version has run on).
func openLedger(d *spool.Dir) (*ledger.Reader, error) {
	path := filepath.Join(d.Root(), ledgerFile)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return ledger.OpenReader(path)
}

func listItems(d *spool.Dir, states []spool.State, dest string) ([]listed, error) {
	led, err := openLedger(d)
	if err != nil {
		return nil, err
	}
	if led != nil {
		defer led.Close()
	}
	var out []listed
	for _, st := range states {
		items, err := d.Items(st)
		if err != nil {
			return nil, err
		}
		for _, it := range items {
			l := listed{ID: it.ID, State: string(st), Bytes: it.Size, Since: it.Modified.UTC(), Reason: it.Reason}
			if it.Retry != nil {
				l.Attempts, l.NextAttempt, l.Reason = it.Retry.Attempts, it.Retry.NextAttempt.UTC(), it.Retry.LastError
			}
			if desc, err := spool.DescribeItem(it); err == nil {
				l.SOPInstance, l.Study, l.CallingAE = desc.SOPInstanceUID, desc.StudyInstanceUID, desc.CallingAE
			} else if errors.Is(err, spool.ErrDamaged) {
				l.Damaged, l.Reason = true, err.Error()
			} else {
				l.Reason = strings.TrimSpace(l.Reason + " (unreadable: " + err.Error() + ")")
			}
			if led != nil {
				if o, ok, err := led.Object(it.ID); err == nil && ok {
					for _, ds := range o.Deliveries {
						l.Destinations = append(l.Destinations, listedDelivery{Name: ds.Destination, State: ds.State, Attempts: ds.Retry.Attempts,
							NextAttempt: utcOrZero(ds.Retry.NextAttempt), LastError: ds.Retry.LastError, DeliveredAt: utcOrZero(ds.DeliveredAt), DeadReason: ds.DeadReason})
						// The object's own columns: the most attempts of a
						// pending destination, and its next attempt.
						if ds.State == "pending" && ds.Retry.Attempts > l.Attempts {
							l.Attempts, l.NextAttempt = ds.Retry.Attempts, utcOrZero(ds.Retry.NextAttempt)
						}
					}
				}
			}
			if dest != "" && !slices.ContainsFunc(l.Destinations, func(x listedDelivery) bool { return x.Name == dest }) {
				continue
			}
			out = append(out, l)
		}
	}
	return out, nil
}

func utcOrZero(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return t.UTC()
}

// deliveriesCell is the DESTINATIONS column: name=state per destination,
// with the attempts of pending ones.
func deliveriesCell(ds []listedDelivery) string {
	var parts []string
	for _, x := range ds {
		p := x.Name + "=" + x.State
		if x.State == "pending" && x.Attempts > 0 {
			p += fmt.Sprintf("(%d attempts)", x.Attempts)
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, " ")
}

// reasonCell is the REASON column: the object's own reason (damage, an old
// version's retry), else each destination's last error or dead reason.
func reasonCell(l listed) string {
	if l.Reason != "" {
		return l.Reason
	}
	var parts []string
	for _, x := range l.Destinations {
		switch {
		case x.DeadReason != "":
			parts = append(parts, x.Name+": "+x.DeadReason)
		case x.LastError != "":
			parts = append(parts, x.Name+": "+x.LastError)
		}
	}
	return strings.Join(parts, "; ")
}

func spoolList(w io.Writer, d *spool.Dir, states []spool.State, dest string, asJSON bool) error {
	items, err := listItems(d, states, dest)
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(w)
		for _, it := range items {
			if err := enc.Encode(it); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tBYTES\tAGE\tATTEMPTS\tCALLING AE\tSOP INSTANCE UID\tSTUDY INSTANCE UID\tDESTINATIONS\tREASON")
	for _, it := range items {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%v\t%d\t%s\t%s\t%s\t%s\t%s\n", it.ID, it.State, it.Bytes, time.Since(it.Since).Round(time.Second),
			it.Attempts, cell(it.CallingAE), cell(it.SOPInstance), cell(it.Study), deliveriesCell(it.Destinations), cell(reasonCell(it)))
	}
	return tw.Flush()
}

// cell makes a string that came from a peer or an endpoint (a UID, an AE
// title, a reason quoting an answer) safe for a row of text: one that
// holds anything but printable ASCII — a newline that would forge a row,
// a tab that would shift the columns, an escape sequence for the terminal
// — is shown Go-quoted, escapes visible. JSON output needs none of this.
func cell(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f {
			return strconv.QuoteToASCII(s)
		}
	}
	return s
}

// spoolRetry sends dead letters again: in the ledger, their dead
// deliveries (dest's only, when given) become pending again, then their
// files go back to the queue; the daemon's rescan finds them. Dead letters
// of an earlier version (unknown to the ledger) are moved back only: the
// daemon routes them as it takes them in.
func spoolRetry(w io.Writer, d *spool.Dir, dest string, all bool, sop, study string, ids []string) error {
	chosen := 0
	for _, set := range []bool{all, sop != "", study != "", len(ids) > 0} {
		if set {
			chosen++
		}
	}
	if chosen != 1 {
		return errors.New("say which dead letters: --all, --sop UID, --study UID, or object IDs")
	}
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	var admin *ledger.Admin
	if _, err := os.Stat(filepath.Join(d.Root(), ledgerFile)); err == nil {
		if admin, err = ledger.OpenAdmin(filepath.Join(d.Root(), ledgerFile)); err != nil {
			return err
		}
		defer admin.Close()
	}
	// Dead letters are dead deliveries: in dead/, or in queue/ while
	// another destination is still pending.
	items, err := listItems(d, []spool.State{spool.StateDead, spool.StateQueued}, "")
	if err != nil {
		return err
	}
	n := 0
	for _, it := range items {
		if !(all || sop != "" && it.SOPInstance == sop || study != "" && it.Study == study || want[it.ID]) {
			continue
		}
		var requeue []string
		for _, x := range it.Destinations {
			if x.State == "dead" && (dest == "" || x.Name == dest) {
				requeue = append(requeue, x.Name)
			}
		}
		legacy := len(it.Destinations) == 0 && it.State == string(spool.StateDead)
		if len(requeue) == 0 && !legacy {
			continue
		}
		if legacy && dest != "" {
			return fmt.Errorf("%s was dead-lettered by an earlier version, for no destination in particular: retry it without --destination", it.ID)
		}
		for _, name := range requeue {
			if admin == nil {
				break
			}
			if err := admin.Requeue(it.ID, name); err != nil {
				return err
			}
		}
		if it.State == string(spool.StateDead) {
			if err := d.Requeue(it.ID); err != nil {
				return err
			}
		}
		delete(want, it.ID)
		n++
	}
	for id := range want {
		if dest != "" {
			return fmt.Errorf("%s is not a dead letter of destination %s", id, dest)
		}
		return fmt.Errorf("%s is not a dead letter", id)
	}
	fmt.Fprintf(w, "re-queued %d dead letter(s)\n", n)
	return nil
}

func spoolPurge(w io.Writer, d *spool.Dir, states []spool.State, age time.Duration) error {
	cutoff := time.Now().Add(-age)
	for _, st := range states {
		n, bytes, err := d.Purge(st, cutoff)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "purged %d %s object(s), %d bytes, older than %v\n", n, st, bytes, age)
	}
	return nil
}

// traced is one object as spool trace prints it.
type traced struct {
	ID           string           `json:"id"`
	Received     time.Time        `json:"received"`
	CallingAE    string           `json:"calling_ae"`
	CalledAE     string           `json:"called_ae"`
	Peer         string           `json:"peer"`
	SOPInstance  string           `json:"sop_instance_uid"`
	SOPClass     string           `json:"sop_class_uid"`
	Series       string           `json:"series_instance_uid"`
	Study        string           `json:"study_instance_uid"`
	Bytes        int64            `json:"bytes"`
	LeftSpool    time.Time        `json:"left_spool,omitzero"`
	Destinations []tracedDelivery `json:"destinations"`
}

type tracedDelivery struct {
	Name        string    `json:"name"`
	State       string    `json:"state"`
	DeliveredAt time.Time `json:"delivered_at,omitzero"`
	DeadAt      time.Time `json:"dead_at,omitzero"`
	DeadReason  string    `json:"dead_reason,omitempty"`
	Attempts    int       `json:"attempts,omitempty"`
	LastError   string    `json:"last_error,omitempty"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	Copy        string    `json:"copy,omitempty"` // what it got when not the original
}

// spoolTrace answers "where did it go": from the ledger, the objects that
// match q, newest first, each with where it came from and, per
// destination, when it was delivered or why not.
func spoolTrace(w io.Writer, d *spool.Dir, q ledger.Query, asJSON bool) error {
	led, err := openLedger(d)
	if err != nil {
		return err
	}
	if led == nil {
		return fmt.Errorf("%s has no delivery ledger yet: no routing version of the daemon has run on it", d.Root())
	}
	defer led.Close()
	objs, err := led.Trace(q)
	if err != nil {
		return err
	}
	var out []traced
	for _, o := range objs {
		t := traced{ID: o.ID, Received: o.Received.UTC(), CallingAE: o.CallingAE, CalledAE: o.CalledAE, Peer: o.Peer,
			SOPInstance: o.SOPInstanceUID, SOPClass: o.SOPClassUID, Series: o.SeriesInstanceUID, Study: o.StudyInstanceUID,
			Bytes: o.Size, LeftSpool: utcOrZero(o.GoneAt)}
		for _, ds := range o.Deliveries {
			t.Destinations = append(t.Destinations, tracedDelivery{Name: ds.Destination, State: ds.State, DeliveredAt: utcOrZero(ds.DeliveredAt),
				DeadAt: utcOrZero(ds.DeadAt), DeadReason: ds.DeadReason, Attempts: ds.Retry.Attempts, LastError: ds.Retry.LastError,
				NextAttempt: utcOrZero(ds.Retry.NextAttempt), Copy: ds.Copy})
		}
		out = append(out, t)
	}
	if asJSON {
		enc := json.NewEncoder(w)
		for _, t := range out {
			if err := enc.Encode(t); err != nil {
				return err
			}
		}
		return nil
	}
	if len(out) == 0 {
		fmt.Fprintln(w, "no object matches (the ledger remembers objects for --ledger-retention after they leave the spool)")
		return nil
	}
	for i, t := range out {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "%s  received %s from %s (%s) for %s, %d bytes\n", t.ID, t.Received.Format(time.RFC3339), cell(t.CallingAE), cell(t.Peer), cell(t.CalledAE), t.Bytes)
		fmt.Fprintf(w, "  study %s  series %s  SOP instance %s\n", cell(t.Study), cell(t.Series), cell(t.SOPInstance))
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, x := range t.Destinations {
			switch x.State {
			case "delivered":
				what := "the original"
				if x.Copy != "" {
					what = x.Copy
				}
				fmt.Fprintf(tw, "  %s\tdelivered\t%s\t%s\n", cell(x.Name), x.DeliveredAt.Format(time.RFC3339), cell(what))
			case "dead":
				fmt.Fprintf(tw, "  %s\tdead\t%s\t%s\n", cell(x.Name), x.DeadAt.Format(time.RFC3339), cell(x.DeadReason))
			default:
				why := "not tried yet"
				if x.Attempts > 0 {
					why = fmt.Sprintf("%d attempts, next %s: %s", x.Attempts, x.NextAttempt.Format(time.RFC3339), x.LastError)
				}
				fmt.Fprintf(tw, "  %s\tpending\t\t%s\n", cell(x.Name), cell(why))
			}
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if !t.LeftSpool.IsZero() {
			fmt.Fprintf(w, "  left the spool %s\n", t.LeftSpool.Format(time.RFC3339))
		}
	}
	return nil
}

// listedCommitment is a storage commitment request as `spool commitments`
// shows it.
type listedCommitment struct {
	CallingAE      string    `json:"calling_ae"`
	TransactionUID string    `json:"transaction_uid"`
	CalledAE       string    `json:"called_ae"`
	Mode           string    `json:"mode"`
	State          string    `json:"state"`
	Instances      int       `json:"instances"`
	Committed      int       `json:"committed"`
	Failed         int       `json:"failed"`
	RequestedAt    time.Time `json:"requested_at"`
	Deadline       time.Time `json:"deadline"`
	DecidedAt      time.Time `json:"decided_at,omitzero"`
	ReportedAt     time.Time `json:"reported_at,omitzero"`
	Via            string    `json:"via,omitempty"`
	Attempts       int       `json:"report_attempts,omitempty"`
	NextAttempt    time.Time `json:"next_attempt,omitzero"`
	LastError      string    `json:"last_error,omitempty"`
}

// spoolCommitments lists the storage commitment requests the ledger holds
// (the last 1000), newest first.
func spoolCommitments(w io.Writer, d *spool.Dir, asJSON bool) error {
	led, err := openLedger(d)
	if err != nil {
		return err
	}
	if led == nil {
		return fmt.Errorf("%s has no delivery ledger yet", d.Root())
	}
	defer led.Close()
	cs, err := led.Commitments(1000)
	if err != nil {
		return err
	}
	out := make([]listedCommitment, 0, len(cs))
	for _, c := range cs {
		l := listedCommitment{CallingAE: c.CallingAE, TransactionUID: c.TransactionUID, CalledAE: c.CalledAE, Mode: c.Mode, State: c.State,
			Instances: len(c.Refs), RequestedAt: c.RequestedAt.UTC(), Deadline: c.Deadline.UTC(), DecidedAt: utcOrZero(c.DecidedAt),
			ReportedAt: utcOrZero(c.ReportedAt), Via: c.Via, Attempts: c.Attempts, NextAttempt: utcOrZero(c.NextAttempt), LastError: c.LastError}
		for _, r := range c.Results {
			if r.Reason == 0 {
				l.Committed++
			} else {
				l.Failed++
			}
		}
		out = append(out, l)
	}
	if asJSON {
		enc := json.NewEncoder(w)
		for _, l := range out {
			if err := enc.Encode(l); err != nil {
				return err
			}
		}
		return nil
	}
	if len(out) == 0 {
		fmt.Fprintln(w, "no storage commitment request")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REQUESTED\tCALLING AE\tTRANSACTION UID\tMODE\tSTATE\tINSTANCES\tCOMMITTED\tFAILED\tDETAIL")
	for _, l := range out {
		detail := ""
		switch l.State {
		case "waiting":
			detail = "deadline " + l.Deadline.Format(time.RFC3339)
		case "reporting":
			detail = "decided " + l.DecidedAt.Format(time.RFC3339)
			if l.Attempts > 0 {
				detail += fmt.Sprintf("; %d attempts, next %s: %s", l.Attempts, l.NextAttempt.Format(time.RFC3339), l.LastError)
			}
		case "reported":
			detail = "reported " + l.ReportedAt.Format(time.RFC3339) + " on the " + map[string]string{"same": "requester's association", "new": "gateway's association"}[l.Via]
		case "abandoned":
			detail = l.LastError
		}
		committed, failed := strconv.Itoa(l.Committed), strconv.Itoa(l.Failed)
		if l.State == "waiting" {
			committed, failed = "-", "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", l.RequestedAt.Format(time.RFC3339), cell(l.CallingAE), cell(l.TransactionUID),
			l.Mode, l.State, l.Instances, committed, failed, cell(detail))
	}
	return tw.Flush()
}
