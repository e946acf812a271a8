package dimse

import "fmt"

// State is a state of the DICOM upper layer protocol machine (PS3.8 9.2.1,
// Table 9-1).
type State uint8

// States, Sta1 to Sta13.
const (
	Sta1      State = 1 + iota // Idle
	Sta2                       // Transport connection open (awaiting A-ASSOCIATE-RQ PDU)
	Sta3                       // Awaiting local A-ASSOCIATE response primitive
	Sta4                       // Awaiting transport connection opening to complete
	Sta5                       // Awaiting A-ASSOCIATE-AC or A-ASSOCIATE-RJ PDU
	Sta6                       // Association established and ready for data transfer
	Sta7                       // Awaiting A-RELEASE-RP PDU
	Sta8                       // Awaiting local A-RELEASE response primitive
	Sta9                       // Release collision requestor side; awaiting A-RELEASE response
	Sta10                      // Release collision acceptor side; awaiting A-RELEASE-RP PDU
	Sta11                      // Release collision requestor side; awaiting A-RELEASE-RP PDU
	Sta12                      // Release collision acceptor side; awaiting A-RELEASE response primitive
	Sta13                      // Awaiting Transport Connection Close Indication
	numStates = Sta13
)

func (s State) String() string {
	if s >= Sta1 && s <= Sta13 {
		return fmt.Sprintf("Sta%d", uint8(s))
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// Event is an event of the protocol machine (PS3.8 Table 9-2).
type Event uint8

// Events, Evt1 to Evt19.
const (
	Evt1      Event = 1 + iota // A-ASSOCIATE request (local user)
	Evt2                       // Transport connect confirmation (local transport service)
	Evt3                       // A-ASSOCIATE-AC PDU received
	Evt4                       // A-ASSOCIATE-RJ PDU received
	Evt5                       // Transport connection indication (local transport service)
	Evt6                       // A-ASSOCIATE-RQ PDU received
	Evt7                       // A-ASSOCIATE response primitive (accept)
	Evt8                       // A-ASSOCIATE response primitive (reject)
	Evt9                       // P-DATA request primitive
	Evt10                      // P-DATA-TF PDU received
	Evt11                      // A-RELEASE request primitive
	Evt12                      // A-RELEASE-RQ PDU received
	Evt13                      // A-RELEASE-RP PDU received
	Evt14                      // A-RELEASE response primitive
	Evt15                      // A-ABORT request primitive
	Evt16                      // A-ABORT PDU received
	Evt17                      // Transport connection closed indication
	Evt18                      // ARTIM timer expired
	Evt19                      // Unrecognized or invalid PDU received
	numEvents = Evt19
)

func (e Event) String() string {
	if e >= Evt1 && e <= Evt19 {
		return fmt.Sprintf("Evt%d", uint8(e))
	}
	return fmt.Sprintf("Event(%d)", uint8(e))
}

// Action is an action of the protocol machine (PS3.8 Table 9-6 to 9-9).
type Action uint8

// Actions. Their effect and next state are in actionInfo.
const (
	noAction Action = iota
	AE1
	AE2
	AE3
	AE4
	AE5
	AE6
	AE7
	AE8
	DT1
	DT2
	AR1
	AR2
	AR3
	AR4
	AR5
	AR6
	AR7
	AR8
	AR9
	AR10
	AA1
	AA2
	AA3
	AA4
	AA5
	AA6
	AA7
	AA8
	numActions
)

// actionInfo gives each action's name, what it does, and its next state
// (PS3.8 Tables 9-6 to 9-9). AE-6 and AR-8 choose between two next states;
// their entry holds the first and the code that runs them picks.
var actionInfo = [numActions]struct {
	name string
	does string
	next State
}{
	AE1:  {"AE-1", "issue TRANSPORT CONNECT request primitive to local transport service", Sta4},
	AE2:  {"AE-2", "send A-ASSOCIATE-RQ PDU", Sta5},
	AE3:  {"AE-3", "issue A-ASSOCIATE confirmation (accept) primitive", Sta6},
	AE4:  {"AE-4", "issue A-ASSOCIATE confirmation (reject) primitive and close transport connection", Sta1},
	AE5:  {"AE-5", "issue transport connection response primitive; start ARTIM timer", Sta2},
	AE6:  {"AE-6", "stop ARTIM timer; if A-ASSOCIATE-RQ acceptable issue A-ASSOCIATE indication (Sta3), otherwise send A-ASSOCIATE-RJ PDU and start ARTIM timer (Sta13)", Sta3},
	AE7:  {"AE-7", "send A-ASSOCIATE-AC PDU", Sta6},
	AE8:  {"AE-8", "send A-ASSOCIATE-RJ PDU and start ARTIM timer", Sta13},
	DT1:  {"DT-1", "send P-DATA-TF PDU", Sta6},
	DT2:  {"DT-2", "send P-DATA indication primitive", Sta6},
	AR1:  {"AR-1", "send A-RELEASE-RQ PDU", Sta7},
	AR2:  {"AR-2", "issue A-RELEASE indication primitive", Sta8},
	AR3:  {"AR-3", "issue A-RELEASE confirmation primitive and close transport connection", Sta1},
	AR4:  {"AR-4", "send A-RELEASE-RP PDU and start ARTIM timer", Sta13},
	AR5:  {"AR-5", "stop ARTIM timer", Sta1},
	AR6:  {"AR-6", "issue P-DATA indication", Sta7},
	AR7:  {"AR-7", "send P-DATA-TF PDU", Sta8},
	AR8:  {"AR-8", "issue A-RELEASE indication (release collision): requestor Sta9, acceptor Sta10", Sta9},
	AR9:  {"AR-9", "send A-RELEASE-RP PDU", Sta11},
	AR10: {"AR-10", "issue A-RELEASE confirmation primitive", Sta12},
	AA1:  {"AA-1", "send A-ABORT PDU (service-user source) and start (or restart) ARTIM timer", Sta13},
	AA2:  {"AA-2", "stop ARTIM timer if running; close transport connection", Sta1},
	AA3:  {"AA-3", "issue A-ABORT or A-P-ABORT indication and close transport connection", Sta1},
	AA4:  {"AA-4", "issue A-P-ABORT indication primitive", Sta1},
	AA5:  {"AA-5", "stop ARTIM timer", Sta1},
	AA6:  {"AA-6", "ignore PDU", Sta13},
	AA7:  {"AA-7", "send A-ABORT PDU", Sta13},
	AA8:  {"AA-8", "send A-ABORT PDU (service-provider source), issue A-P-ABORT indication, start ARTIM timer", Sta13},
}

func (a Action) String() string {
	if a > noAction && a < numActions {
		return actionInfo[a].name
	}
	return fmt.Sprintf("Action(%d)", uint8(a))
}

// transitions is PS3.8 Table 9-10, the state transition table, written out
// row by row (one row per event, columns Sta1..Sta13). noAction marks the
// empty cells: the event cannot occur in that state.
var transitions = [numEvents + 1][numStates + 1]Action{
	//          Sta1  Sta2  Sta3  Sta4  Sta5  Sta6  Sta7  Sta8  Sta9  Sta10 Sta11 Sta12 Sta13
	Evt1:  {0, AE1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
	Evt2:  {0, 0, 0, 0, AE2, 0, 0, 0, 0, 0, 0, 0, 0, 0},
	Evt3:  {0, 0, AA1, AA8, 0, AE3, AA8, AA8, AA8, AA8, AA8, AA8, AA8, AA6},
	Evt4:  {0, 0, AA1, AA8, 0, AE4, AA8, AA8, AA8, AA8, AA8, AA8, AA8, AA6},
	Evt5:  {0, AE5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
	Evt6:  {0, 0, AE6, AA8, 0, AA8, AA8, AA8, AA8, AA8, AA8, AA8, AA8, AA7},
	Evt7:  {0, 0, 0, AE7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
	Evt8:  {0, 0, 0, AE8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
	Evt9:  {0, 0, 0, 0, 0, 0, DT1, 0, AR7, 0, 0, 0, 0, 0},
	Evt10: {0, 0, AA1, AA8, 0, AA8, DT2, AR6, AA8, AA8, AA8, AA8, AA8, AA6},
	Evt11: {0, 0, 0, 0, 0, 0, AR1, 0, 0, 0, 0, 0, 0, 0},
	Evt12: {0, 0, AA1, AA8, 0, AA8, AR2, AR8, AA8, AA8, AA8, AA8, AA8, AA6},
	Evt13: {0, 0, AA1, AA8, 0, AA8, AA8, AR3, AA8, AA8, AR10, AR3, AA8, AA6},
	Evt14: {0, 0, 0, 0, 0, 0, 0, 0, AR4, AR9, 0, 0, AR4, 0},
	Evt15: {0, 0, 0, AA1, AA2, AA1, AA1, AA1, AA1, AA1, AA1, AA1, AA1, 0},
	Evt16: {0, 0, AA2, AA3, 0, AA3, AA3, AA3, AA3, AA3, AA3, AA3, AA3, AA2},
	Evt17: {0, 0, AA5, AA4, AA4, AA4, AA4, AA4, AA4, AA4, AA4, AA4, AA4, AR5},
	Evt18: {0, 0, AA2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, AA2},
	Evt19: {0, 0, AA1, AA8, 0, AA8, AA8, AA8, AA8, AA8, AA8, AA8, AA8, AA7},
}

// transition looks up the action for event e in state s. ok is false for an
// empty cell of Table 9-10.
func transition(s State, e Event) (Action, bool) {
	if s < Sta1 || s > Sta13 || e < Evt1 || e > Evt19 {
		return noAction, false
	}
	a := transitions[e][s]
	return a, a != noAction
}
