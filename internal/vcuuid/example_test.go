package vcuuid_test

import (
	"fmt"

	"github.com/vspc-bridge/vspc-bridge/internal/vcuuid"
)

func ExampleNormalize() {
	u, err := vcuuid.Normalize("42 1c 7b 3e 6e 55 f0 b4-8c 2b 35 b1 0c 3c 20 cb")
	fmt.Println(u, err)
	// Output: 421c7b3e-6e55-f0b4-8c2b-35b10c3c20cb <nil>
}
