package dimse

import (
	"strings"
	"testing"
)

// table910 is PS3.8 Table 9-10 typed out a second time, cell by cell as
// "event: state=action ...", independently of the array in statemachine.go,
// so that a slip in either shows up.
const table910 = `
Evt1:  Sta1=AE-1
Evt2:  Sta4=AE-2
Evt3:  Sta2=AA-1 Sta3=AA-8 Sta5=AE-3 Sta6=AA-8 Sta7=AA-8 Sta8=AA-8 Sta9=AA-8 Sta10=AA-8 Sta11=AA-8 Sta12=AA-8 Sta13=AA-6
Evt4:  Sta2=AA-1 Sta3=AA-8 Sta5=AE-4 Sta6=AA-8 Sta7=AA-8 Sta8=AA-8 Sta9=AA-8 Sta10=AA-8 Sta11=AA-8 Sta12=AA-8 Sta13=AA-6
Evt5:  Sta1=AE-5
Evt6:  Sta2=AE-6 Sta3=AA-8 Sta5=AA-8 Sta6=AA-8 Sta7=AA-8 Sta8=AA-8 Sta9=AA-8 Sta10=AA-8 Sta11=AA-8 Sta12=AA-8 Sta13=AA-7
Evt7:  Sta3=AE-7
Evt8:  Sta3=AE-8
Evt9:  Sta6=DT-1 Sta8=AR-7
Evt10: Sta2=AA-1 Sta3=AA-8 Sta5=AA-8 Sta6=DT-2 Sta7=AR-6 Sta8=AA-8 Sta9=AA-8 Sta10=AA-8 Sta11=AA-8 Sta12=AA-8 Sta13=AA-6
Evt11: Sta6=AR-1
Evt12: Sta2=AA-1 Sta3=AA-8 Sta5=AA-8 Sta6=AR-2 Sta7=AR-8 Sta8=AA-8 Sta9=AA-8 Sta10=AA-8 Sta11=AA-8 Sta12=AA-8 Sta13=AA-6
Evt13: Sta2=AA-1 Sta3=AA-8 Sta5=AA-8 Sta6=AA-8 Sta7=AR-3 Sta8=AA-8 Sta9=AA-8 Sta10=AR-10 Sta11=AR-3 Sta12=AA-8 Sta13=AA-6
Evt14: Sta8=AR-4 Sta9=AR-9 Sta12=AR-4
Evt15: Sta3=AA-1 Sta4=AA-2 Sta5=AA-1 Sta6=AA-1 Sta7=AA-1 Sta8=AA-1 Sta9=AA-1 Sta10=AA-1 Sta11=AA-1 Sta12=AA-1
Evt16: Sta2=AA-2 Sta3=AA-3 Sta5=AA-3 Sta6=AA-3 Sta7=AA-3 Sta8=AA-3 Sta9=AA-3 Sta10=AA-3 Sta11=AA-3 Sta12=AA-3 Sta13=AA-2
Evt17: Sta2=AA-5 Sta3=AA-4 Sta4=AA-4 Sta5=AA-4 Sta6=AA-4 Sta7=AA-4 Sta8=AA-4 Sta9=AA-4 Sta10=AA-4 Sta11=AA-4 Sta12=AA-4 Sta13=AR-5
Evt18: Sta2=AA-2 Sta13=AA-2
Evt19: Sta2=AA-1 Sta3=AA-8 Sta5=AA-8 Sta6=AA-8 Sta7=AA-8 Sta8=AA-8 Sta9=AA-8 Sta10=AA-8 Sta11=AA-8 Sta12=AA-8 Sta13=AA-7
`

// TestTransitionTable checks every one of the 13 x 19 cells of PS3.8 Table
// 9-10, the empty ones included.
func TestTransitionTable(t *testing.T) {
	want := map[[2]string]string{}
	for _, line := range strings.Split(strings.TrimSpace(table910), "\n") {
		ev, cells, _ := strings.Cut(line, ":")
		for _, c := range strings.Fields(cells) {
			st, act, _ := strings.Cut(c, "=")
			want[[2]string{ev, st}] = act
		}
	}
	cells := 0
	for e := Evt1; e <= Evt19; e++ {
		for s := Sta1; s <= Sta13; s++ {
			act, ok := transition(s, e)
			w, wok := want[[2]string{e.String(), s.String()}]
			if ok != wok || (ok && act.String() != w) {
				t.Errorf("%v + %v: got %v (%v), want %q (%v)", s, e, act, ok, w, wok)
			}
			if ok {
				cells++
			}
		}
	}
	if cells != len(want) {
		t.Errorf("%d filled cells, the standard has %d", cells, len(want))
	}
	if _, ok := transition(0, Evt1); ok {
		t.Error("state 0 has a transition")
	}
	if _, ok := transition(Sta1, 20); ok {
		t.Error("event 20 has a transition")
	}
}

// TestActionInfo: every action has its PS3.8 name, a description, and a
// next state (PS3.8 Tables 9-6 to 9-9).
func TestActionInfo(t *testing.T) {
	next := map[string]State{
		"AE-1": Sta4, "AE-2": Sta5, "AE-3": Sta6, "AE-4": Sta1, "AE-5": Sta2, "AE-6": Sta3, "AE-7": Sta6, "AE-8": Sta13,
		"DT-1": Sta6, "DT-2": Sta6,
		"AR-1": Sta7, "AR-2": Sta8, "AR-3": Sta1, "AR-4": Sta13, "AR-5": Sta1, "AR-6": Sta7, "AR-7": Sta8, "AR-8": Sta9, "AR-9": Sta11, "AR-10": Sta12,
		"AA-1": Sta13, "AA-2": Sta1, "AA-3": Sta1, "AA-4": Sta1, "AA-5": Sta1, "AA-6": Sta13, "AA-7": Sta13, "AA-8": Sta13,
	}
	for a := AE1; a < numActions; a++ {
		info := actionInfo[a]
		if info.name == "" || info.does == "" {
			t.Errorf("action %d has no name or description", a)
		}
		if want, ok := next[info.name]; !ok || info.next != want {
			t.Errorf("%s: next state %v, want %v", info.name, info.next, want)
		}
		delete(next, info.name)
	}
	if len(next) != 0 {
		t.Errorf("actions missing: %v", next)
	}
	if Action(99).String() != "Action(99)" || State(0).String() != "State(0)" || Event(0).String() != "Event(0)" {
		t.Error("out-of-range names")
	}
}
