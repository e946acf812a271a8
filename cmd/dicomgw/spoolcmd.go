package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/dicomgw/dicomgw/pkg/spool"
)

const spoolUsage = `usage: dicomgw spool <command> --spool-dir DIR [flags]

commands (safe while the daemon runs):
  stats                         objects, bytes and oldest age per state
  ls [--state S] [--json]       list objects with their UIDs, attempts and reasons
  retry (--all | --sop UID | --study UID | ID...)
                                move dead letters back to the queue (the daemon
                                picks them up within its rescan interval, 30 s)
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
		err = spoolList(stdout, d, states, *asJSON)
	case "retry":
		err = spoolRetry(stdout, d, *all, *sop, *study, fs.Args())
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
}

func listItems(d *spool.Dir, states []spool.State) ([]listed, error) {
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
			out = append(out, l)
		}
	}
	return out, nil
}

func spoolList(w io.Writer, d *spool.Dir, states []spool.State, asJSON bool) error {
	items, err := listItems(d, states)
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
	fmt.Fprintln(tw, "ID\tSTATE\tBYTES\tAGE\tATTEMPTS\tCALLING AE\tSOP INSTANCE UID\tSTUDY INSTANCE UID\tREASON")
	for _, it := range items {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%v\t%d\t%s\t%s\t%s\t%s\n", it.ID, it.State, it.Bytes, time.Since(it.Since).Round(time.Second),
			it.Attempts, cell(it.CallingAE), cell(it.SOPInstance), cell(it.Study), cell(it.Reason))
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

func spoolRetry(w io.Writer, d *spool.Dir, all bool, sop, study string, ids []string) error {
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
	items, err := listItems(d, []spool.State{spool.StateDead})
	if err != nil {
		return err
	}
	n := 0
	for _, it := range items {
		if all || sop != "" && it.SOPInstance == sop || study != "" && it.Study == study || want[it.ID] {
			if err := d.Requeue(it.ID); err != nil {
				return err
			}
			delete(want, it.ID)
			n++
		}
	}
	for id := range want {
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
