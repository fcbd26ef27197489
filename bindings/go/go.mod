module github.com/gatos-py/gatos/bindings/go

go 1.23
