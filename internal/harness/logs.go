package harness

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Logs returns everything the gateway logged so far (JSON lines).
func (g *Gateway) Logs() string { return g.Output() }

// LogLines returns the gateway's log lines whose msg equals msg.
func (g *Gateway) LogLines(msg string) []string {
	var out []string
	for _, l := range strings.Split(g.Logs(), "\n") {
		if strings.Contains(l, `"msg":"`+msg+`"`) {
			out = append(out, l)
		}
	}
	return out
}

// LogRecords returns the gateway's JSON log records whose msg equals msg,
// decoded (numbers as float64, as encoding/json does).
func (g *Gateway) LogRecords(msg string) []map[string]any {
	var out []map[string]any
	for _, l := range g.LogLines(msg) {
		var rec map[string]any
		if json.Unmarshal([]byte(l), &rec) == nil && rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// WaitLog polls the log until a record with msg (and, if match is not nil,
// for which match is true) appears, and returns it.
func (g *Gateway) WaitLog(msg string, timeout time.Duration, match func(map[string]any) bool) (map[string]any, error) {
	find := func() map[string]any {
		for _, rec := range g.LogRecords(msg) {
			if match == nil || match(rec) {
				return rec
			}
		}
		return nil
	}
	deadline := time.Now().Add(timeout)
	for {
		if rec := find(); rec != nil {
			return rec, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no %q log record within %v; log:\n%s", msg, timeout, g.Logs())
		}
		select {
		case <-g.Exited():
			// Every line is in: the log was read to EOF before exit.
			if rec := find(); rec != nil {
				return rec, nil
			}
			return nil, fmt.Errorf("dicomgw exited while waiting for %q; log:\n%s", msg, g.Logs())
		case <-time.After(10 * time.Millisecond):
		}
	}
}
