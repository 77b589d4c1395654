module github.com/seed157d4c4d/reliablemq

go 1.26.0
