# The board application: config, Wi-Fi, hardware, the drone sensor and the role runner.
