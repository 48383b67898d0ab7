"""Hardware: NVML, host detection, and the GPU catalogue for planning a box you are not on."""
