package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/pkg/ledger"
)

// oneCopyFixture is n objects committed once each, routed to a and b, and
// a ledger that has each delivered to both and gone.
func oneCopyFixture(n int) ([]map[string]any, []ledger.ObjectState) {
	var spooled []map[string]any
	var objs []ledger.ObjectState
	for i := range n {
		id, sop := fmt.Sprintf("id-%d", i), fmt.Sprintf("1.2.3.%d", i)
		spooled = append(spooled, map[string]any{"msg": "object spooled", "id": id, "sop_instance": sop, "destinations": "b,a"})
		o := ledger.ObjectState{GoneAt: time.Unix(1, 0)}
		o.ID, o.SOPInstanceUID = id, sop
		for _, d := range []string{"a", "b"} {
			o.Deliveries = append(o.Deliveries, ledger.DeliveryState{Destination: d, State: ledger.StateDelivered})
		}
		objs = append(objs, o)
	}
	return spooled, objs
}

func TestCheckOneCopy(t *testing.T) {
	dests := []string{"a", "b"}
	spooled, objs := oneCopyFixture(3)
	cc, err := checkOneCopy(spooled, objs, dests, 3)
	if err != nil {
		t.Fatalf("one copy each: %v", err)
	}
	if cc.Commits != 3 || cc.SpoolIDs != 3 || cc.SOPInstances != 3 || cc.RoutedToAll != 3 ||
		cc.LedgerObjects != 3 || cc.LedgerDelivered["a"] != 3 || cc.LedgerDelivered["b"] != 3 || cc.LedgerGone != 3 {
		t.Errorf("counts %+v", cc)
	}

	cases := map[string]struct {
		change func(s []map[string]any, o []ledger.ObjectState) ([]map[string]any, []ledger.ObjectState)
		want   string
	}{
		"a copy per destination": {func(s []map[string]any, o []ledger.ObjectState) ([]map[string]any, []ledger.ObjectState) {
			// Each object committed twice, once per destination.
			var s2 []map[string]any
			var o2 []ledger.ObjectState
			for i, r := range s {
				for _, d := range []string{"a", "b"} {
					id := fmt.Sprintf("%s-%s", r["id"], d)
					s2 = append(s2, map[string]any{"id": id, "sop_instance": r["sop_instance"], "destinations": d})
					x := o[i]
					x.ID = id
					x.Deliveries = []ledger.DeliveryState{{Destination: d, State: ledger.StateDelivered}}
					o2 = append(o2, x)
				}
			}
			return s2, o2
		}, "6 commits of 3 SOP instances under 6 spool IDs"},
		"routed to one": {func(s []map[string]any, o []ledger.ObjectState) ([]map[string]any, []ledger.ObjectState) {
			s[1]["destinations"] = "a"
			return s, o
		}, "2 of 3 commits routed to a,b"},
		"a delivery pending": {func(s []map[string]any, o []ledger.ObjectState) ([]map[string]any, []ledger.ObjectState) {
			o[0].Deliveries[1].State = ledger.StatePending
			o[0].GoneAt = time.Time{}
			return s, o
		}, "2 deliveries to b, want 3"},
		"an object missing from the ledger": {func(s []map[string]any, o []ledger.ObjectState) ([]map[string]any, []ledger.ObjectState) {
			return s, o[1:]
		}, "the ledger holds 2 objects"},
		"a ledger object under another SOP instance": {func(s []map[string]any, o []ledger.ObjectState) ([]map[string]any, []ledger.ObjectState) {
			o[2].SOPInstanceUID = "9.9"
			return s, o
		}, "1 of them not one per spooled object"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s, o := tc.change(oneCopyFixture(3))
			_, err := checkOneCopy(s, o, dests, 3)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func TestParseIOField(t *testing.T) {
	// proc(5): /proc/PID/io.
	const io = "rchar: 323934931\nwchar: 323929600\nsyscr: 632687\nsyscw: 632675\nread_bytes: 0\nwrite_bytes: 323932160\ncancelled_write_bytes: 0\n"
	if n, err := parseIOField(io, "write_bytes"); err != nil || n != 323932160 {
		t.Errorf("write_bytes: %d, %v", n, err)
	}
	if n, err := parseIOField(io, "cancelled_write_bytes"); err != nil || n != 0 {
		t.Errorf("cancelled_write_bytes: %d, %v", n, err)
	}
	if _, err := parseIOField("rchar: 1\n", "write_bytes"); err == nil {
		t.Error("a missing field: no error")
	}
	if _, err := parseIOField("write_bytes: x\n", "write_bytes"); err == nil {
		t.Error("a field that is not a number: no error")
	}
}
