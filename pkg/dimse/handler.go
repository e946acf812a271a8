package dimse

import "github.com/dicomgw/dicomgw/pkg/uid"

// StoreRequest describes one incoming C-STORE to a StoreHandler. Every
// string in it comes from the peer: UIDs have passed Config.UIDPolicy (so
// they may break PS3.5 9.1 in the ways uid.Lenient tolerates) and AE titles
// ValidAETitle, but nothing here is fit to be a file path.
type StoreRequest struct {
	AssociationID           string
	CallingAE, CalledAE     string
	RemoteAddr              string
	SOPClassUID             string // Affected SOP Class UID (0000,0002)
	SOPInstanceUID          string // Affected SOP Instance UID (0000,1000)
	TransferSyntaxUID       string // of the presentation context: how the data set is encoded
	MessageID               uint16
	Priority                uint16
	MoveOriginatorAE        string
	MoveOriginatorMessageID uint16
}

// StoreHandler receives C-STORE data sets.
type StoreHandler interface {
	// BeginStore is called once the C-STORE-RQ command has arrived, before
	// any of its data set. An error refuses the object: its data set is
	// read and dropped, and the sender gets the status of a *StatusError,
	// or StatusOutOfResources.
	BeginStore(req *StoreRequest) (StoreWriter, error)
}

// StoreWriter receives one data set as it arrives.
type StoreWriter interface {
	// Write receives the data set fragments in order, byte for byte as
	// received. An error makes the association drop the rest of the data
	// set, call Abort and answer with the error's status.
	Write(p []byte) (int, error)
	// Commit is called after the last fragment. It must return a nil error
	// only once the object is durable: the sender is then told 0000
	// (success). An error is answered with its status (see StatusError)
	// and the writer must have left nothing behind.
	Commit() (Committed, error)
	// Abort discards the object: the association ended before the data
	// set was complete, or Write failed. It is called at most once, and
	// never after Commit.
	Abort()
}

// Committed is what a StoreWriter tells the association about an object
// it made durable.
type Committed struct {
	// Nonconforming lists the data set's UIDs that break PS3.5 9.1 in a
	// way Config.UIDPolicy tolerates (the Study and Series Instance UIDs:
	// the association checks the command's itself). The association counts
	// and logs them.
	Nonconforming []uid.Finding
}
