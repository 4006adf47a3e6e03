"""What tests share: sample apps, private servers, network faults, waiting."""
