"""``tdc demo``: a generated order history through real workers, checked against expectations."""
