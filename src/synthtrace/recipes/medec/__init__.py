"""The medec recipe: verified critic and generator traces from MEDEC clinical-note pairs."""
